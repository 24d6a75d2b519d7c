"""Tracing is off unless the standard OTEL_* variables ask for it, and off costs nothing:
no provider, exporter, instrumentation or export thread. (The traces themselves, across a
real gateway and worker: tests/service/test_telemetry.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.processes import ROOT
from workers.core import telemetry


@pytest.mark.parametrize(
    ("environ", "requested"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "claw"}, False),  # names the service, exports nothing
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
    ],
)
def test_tracing_is_requested_only_by_a_variable_that_exports(
    environ: dict[str, str], requested: bool
) -> None:
    assert telemetry.tracing_requested(environ) is requested


OFF_PROCESS = """
import sys
import threading

from aiohttp import web
from celery.signals import before_task_publish, task_prerun
from opentelemetry import trace

from workers.core import telemetry
import workers.celery_app, workers.runtime.tracing, service.app, service.publisher
from workers.taskindex.record import submission_fields

aiohttp_application = web.Application
assert telemetry.configure_tracing("gateway") is False
assert telemetry.configure_tracing("worker") is False
assert not telemetry.tracing_enabled()
# No provider, instrumentation, exporter or export thread.
assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
assert web.Application is aiohttp_application
receivers = before_task_publish.receivers + task_prerun.receivers
assert not [r for r in receivers if "opentelemetry" in repr(r)], receivers
loaded = [name for name in sys.modules if name.startswith(
    ("opentelemetry.instrumentation", "opentelemetry.exporter", "opentelemetry.sdk.trace"))]
assert not loaded, loaded
assert [t.name for t in threading.enumerate()] == ["MainThread"]
# What the helpers give the code that calls them: nothing.
assert telemetry.current_trace_id() is None
assert submission_fields("n", [], {}, queue="q", priority=1, owner="o")["trace_id"] is None
with telemetry.publishing("n", "id") as headers:
    assert headers == {}
with telemetry.outgoing_request("POST", "example.com", 443) as request:
    assert request.headers == {}
    request.answered(500)
"""


def test_without_otel_variables_nothing_is_configured_nor_imported() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", OFF_PROCESS], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


ON_PROCESS = """
import http.server
import threading

from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from workers.core import telemetry
from workers.notify.targets import TargetPolicy
from workers.notify.webhook import post_signed
from workers.taskindex.record import submission_fields

assert telemetry.configure_tracing("worker") is True
exporter = InMemorySpanExporter()
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
received = []

class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        received.append(self.headers.get("traceparent"))
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
threading.Thread(target=server.serve_forever, daemon=True).start()
port = server.server_address[1]

with trace.get_tracer("test").start_as_current_span("run/test") as run:
    trace_id = format(run.get_span_context().trace_id, "032x")
    assert telemetry.current_trace_id() == trace_id
    assert submission_fields("n", [], {}, queue="q", priority=1, owner="o")["trace_id"] == trace_id
    with telemetry.publishing("n", "id") as headers:
        assert headers["traceparent"].split("-")[1] == trace_id
    post_signed(f"http://127.0.0.1:{port}/hook/receiver-secret?token=abc", b"{}", {},
                timeout=5, policy=TargetPolicy(allow_private=True))
server.shutdown()

(call,) = [s for s in exporter.get_finished_spans() if s.kind is trace.SpanKind.CLIENT
           and s.name == "POST"]
assert call.parent.span_id == run.get_span_context().span_id
assert dict(call.attributes) == {"http.request.method": "POST", "server.address": "127.0.0.1",
                                 "server.port": port, "http.response.status_code": 204}
# The receiver is told the trace: its parent is the webhook call's span.
(traceparent,) = received
assert traceparent.split("-")[1:3] == [trace_id, f"{call.context.span_id:016x}"], traceparent
"""


def test_on_a_webhook_call_is_a_span_of_the_run_and_tells_the_receiver_the_trace() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_TRACES_EXPORTER"] = "console"
    done = subprocess.run(
        [sys.executable, "-c", ON_PROCESS], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
