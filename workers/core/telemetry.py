"""OpenTelemetry traces: on when the standard `OTEL_*` variables ask for export, else off.

A trace starts at the gateway's HTTP request (aiohttp's server instrumentation), travels
with the task's message (a W3C `traceparent` header: the gateway's publisher adds it,
Celery's instrumentation does for every other publisher) and goes on in the worker's
`run/<task>` span and its outgoing calls: Redis, OpenAI (httpx2), webhooks.

Off, no provider, exporter or instrumentation is set up, this module imports nothing of
OpenTelemetry and every helper here returns a constant: tracing costs nothing unless it is
asked for. Spans carry names, ids, queues, hosts and statuses, never tenant content
(prompts, replies, documents, webhook URLs' paths); the Redis instrumentation sends
commands with their arguments replaced by `?`.

The SDK reads its own `OTEL_*` variables (exporter endpoint and headers, sampler, batch
sizes, service name, resource attributes) from the process environment, as OpenTelemetry
documents them, so the settings object does not repeat them; this module reads them only
to decide whether to start the SDK at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any, Literal

logger = logging.getLogger(__name__)

Role = Literal["gateway", "worker"]

# Each names where spans go; one of them set (and OTEL_TRACES_EXPORTER not `none`) turns
# tracing on.
EXPORT_VARIABLES = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
# OTEL_TRACES_EXPORTER's names of OTLP; this install ships OTLP over HTTP/protobuf only.
OTLP_EXPORTERS = ("otlp", "otlp_proto_http")

# The process's TracerProvider once `configure_tracing` set it up.
_provider: Any = None


def tracing_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: OTEL_TRACES_EXPORTER (other than `none`)
    or an OTLP endpoint, and not OTEL_SDK_DISABLED=true."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return any(environ.get(name, "").strip() for name in EXPORT_VARIABLES)


def tracing_enabled() -> bool:
    return _provider is not None


def configure_tracing(role: Role, environ: Mapping[str, str] = os.environ) -> bool:
    """Start the SDK and this role's instrumentations when the environment asks for traces
    (once per process; call it in the process that serves or runs tasks, after any fork).
    Returns whether tracing is on."""
    global _provider
    if _provider is not None:
        return True
    if not tracing_requested(environ):
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        # Neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names the service.
        resource = resource.merge(Resource({SERVICE_NAME: f"claw-{role}"}))
    provider = TracerProvider(resource=resource)
    for exporter in _exporters(environ):
        provider.add_span_processor(_in_traces_only(BatchSpanProcessor(exporter)))
    trace.set_tracer_provider(provider)
    _provider = provider
    _instrument(role)
    logger.info(
        "tracing on: %s spans of service %s exported",
        role, resource.attributes.get(SERVICE_NAME),
    )  # fmt: skip
    return True


def _exporters(environ: Mapping[str, str]) -> list[Any]:
    """The span exporters OTEL_TRACES_EXPORTER names (default `otlp`); others installed as
    `opentelemetry_traces_exporter` entry points are loaded by name."""
    names = [
        name.strip()
        for name in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").lower().split(",")
        if name.strip() and name.strip() != "none"
    ]
    exporters: list[Any] = []
    for name in names:
        if name in OTLP_EXPORTERS:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            if protocol != "http/protobuf":
                logger.warning("OTLP protocol %s is not installed: http/protobuf used", protocol)
            exporters.append(OTLPSpanExporter())
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        else:
            found = entry_points(group="opentelemetry_traces_exporter", name=name)
            if not found:
                logger.warning("OTEL_TRACES_EXPORTER names %s, which is not installed", name)
            exporters += [entry.load()() for entry in found]
    return exporters


def _in_traces_only(processor: Any) -> Any:
    """`processor`, but for the spans of a client call outside of any request or task
    (the gateway's feed reads, a threads-pool worker's housekeeping): each would be a trace
    of one span, many a minute, that nobody asked for."""
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.trace import SpanKind

    class InTracesOnly(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            processor.on_start(span, parent_context=parent_context)

        def on_end(self, span: Any) -> None:
            if span.parent is not None or span.kind is not SpanKind.CLIENT:
                processor.on_end(span)

        def shutdown(self) -> None:
            processor.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return bool(processor.force_flush(timeout_millis))

    return InTracesOnly()


def _instrument(role: Role) -> None:
    """The maintained instrumentations of the libraries this role uses."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor().instrument()
    if role == "gateway":
        # Before the application is built: it replaces `web.Application` with a subclass
        # whose first middleware opens the request's span.
        from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

        AioHttpServerInstrumentor().instrument()
        # The gateway's publisher carries the context itself (`publishing`): Celery's
        # instrumentation would open a span it never closes for a task it has no class of.
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor

    CeleryInstrumentor().instrument()
    HTTPX2ClientInstrumentor().instrument()  # the OpenAI SDK's HTTP client


def shutdown_tracing() -> None:
    """Export what is buffered and stop (a pool process exits without running atexit)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def current_trace_id() -> str | None:
    """The trace id (32 hex digits) of the span running now; None outside of any trace
    and whenever tracing is off."""
    if _provider is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def publishing(name: str, task_id: str) -> contextlib.AbstractContextManager[dict[str, str]]:
    """Around a publish that Celery's instrumentation does not see (the gateway's): a
    PRODUCER span named as that instrumentation names its own, and the headers that carry
    its context to the worker. Off: no span, no headers."""
    if _provider is None:
        return contextlib.nullcontext({})
    return _producer_span(name, task_id)


@contextlib.contextmanager
def _producer_span(name: str, task_id: str) -> Iterator[dict[str, str]]:
    from opentelemetry import propagate, trace

    attributes = {
        "celery.action": "apply_async",
        "celery.task_name": name,
        "messaging.message.id": task_id,
    }
    tracer = trace.get_tracer(__name__)
    with tracer.start_as_current_span(
        f"apply_async/{name}", kind=trace.SpanKind.PRODUCER, attributes=attributes
    ):
        headers: dict[str, str] = {}
        propagate.inject(headers)
        yield headers


class OutgoingRequest:
    """An HTTP request being traced: the headers that carry the trace to the receiver,
    and where its answer's status goes. Off: no headers, nothing recorded."""

    def __init__(self, span: Any = None, headers: dict[str, str] | None = None) -> None:
        self._span = span
        self.headers = headers or {}

    def answered(self, status: int) -> None:
        if self._span is not None:
            self._span.set_attribute("http.response.status_code", status)
            if status >= 400:
                from opentelemetry.trace import Status, StatusCode

                self._span.set_status(Status(StatusCode.ERROR))


_UNTRACED = OutgoingRequest()


def outgoing_request(
    method: str, host: str, port: int
) -> contextlib.AbstractContextManager[OutgoingRequest]:
    """A CLIENT span around an HTTP request no instrumentation sees (the webhooks' own
    `http.client` connections). Only the host and port are recorded: a webhook URL's path
    and query may hold the receiver's secret."""
    if _provider is None:
        return contextlib.nullcontext(_UNTRACED)
    return _client_span(method, host, port)


@contextlib.contextmanager
def _client_span(method: str, host: str, port: int) -> Iterator[OutgoingRequest]:
    from opentelemetry import propagate, trace

    attributes: dict[str, str | int] = {
        "http.request.method": method,
        "server.address": host,
        "server.port": port,
    }
    tracer = trace.get_tracer(__name__)
    with tracer.start_as_current_span(
        method, kind=trace.SpanKind.CLIENT, attributes=attributes
    ) as span:
        headers: dict[str, str] = {}
        propagate.inject(headers)
        yield OutgoingRequest(span, headers)
