"""The one URL table. The OpenAPI document is generated from it and its schemas."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from marshmallow import Schema

from service import schemas, schemas_batches, schemas_schedules, schemas_tasks, schemas_usage
from service.views import (
    batches,
    budgets,
    bulk,
    catalog,
    health,
    knowledge,
    live,
    schedules,
    session,
    stream,
    submit,
    tasks,
    usage,
    webhooks,
    workers,
)

API = "/api/v1/tasks"
# What every submission may answer besides the common errors.
SUBMIT_EXTRA = {
    "responses": {
        "404": "a knowledge base it names is not the caller's",
        "422": "the Idempotency-Key was already used with a different request",
    }
}
BULK_EXTRA = {"also": {"200": ("dry run: how many tasks the filter selects",
                                schemas.BulkDryRunResponse)}}  # fmt: skip
AI_SUBMIT_EXTRA = {
    "responses": {
        **SUBMIT_EXTRA["responses"],
        "429": "the owner is over its budget (service/budgets.py): "
        "`Retry-After`, and the budget in `details.budget`",
    }
}
IN_STATE = {"responses": {"409": "not possible in the task's current state"}}
WORKER_NAMED = {"responses": {"404": "no worker of that name",
                              "504": "no worker replied in time"}}  # fmt: skip


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: object
    summary: str
    body: type[Schema] | None = None
    query: type[Schema] | None = None
    response: type[Schema] | None = None
    status: int = 200
    tags: tuple[str, ...] = ("tasks",)
    public: bool = False
    # Answers text/event-stream (always, or with `?stream=true` on a submission).
    events: bool = False
    # Operators' data or control: an admin key is required (service/middlewares.py).
    admin: bool = False
    extra: dict = field(default_factory=dict)


ROUTES: list[Route] = [
    # Operations
    Route("GET", "/healthz", health.healthz, "Redis reachable and live workers", public=True,
          tags=("operations",)),
    Route("GET", "/health", health.health, "The same as /healthz (an alias)", public=True,
          tags=("operations",)),
    # Submission
    Route("POST", f"{API}/ai/generate", submit.submit_ai_generate, "Submit an AI reply task",
          body=schemas.AiGenerateRequest, query=schemas.WaitQuery,
          response=schemas.SubmitResponse, status=202, tags=("submit",),
          extra=AI_SUBMIT_EXTRA),
    Route("POST", f"{API}/knowledge/vectorize", submit.submit_vectorize,
          "Submit a document for chunking and embedding", body=schemas_tasks.VectorizeRequest,
          query=schemas.WaitQuery, response=schemas.SubmitResponse, status=202,
          tags=("submit",), extra=SUBMIT_EXTRA),
    Route("POST", f"{API}/knowledge/update", submit.submit_update_kb,
          "Re-embed every document of a knowledge base",
          body=schemas_tasks.UpdateKnowledgeBaseRequest, query=schemas.WaitQuery,
          response=schemas.SubmitResponse, status=202, tags=("submit",), extra=SUBMIT_EXTRA),
    Route("POST", f"{API}/knowledge/delete", submit.submit_delete_vectors,
          "Delete the vectors of a document or knowledge base",
          body=schemas_tasks.DeleteVectorsRequest, query=schemas.WaitQuery,
          response=schemas.SubmitResponse, status=202, tags=("submit",), extra=SUBMIT_EXTRA),
    Route("POST", f"{API}/notifications/send", submit.submit_notification,
          "Send a notification (webhook, email, in_app)",
          body=schemas_tasks.SendNotificationRequest, query=schemas.WaitQuery,
          response=schemas.SubmitResponse, status=202, tags=("submit",), extra=SUBMIT_EXTRA),
    # Tasks
    Route("GET", f"{API}/status/{{task_id}}", tasks.task_status, "A task's status and result",
          query=schemas.StatusQuery, response=schemas.TaskStatusResponse),
    Route("GET", f"{API}/{{task_id}}/stream", stream.task_stream,
          "The task's events as Server-Sent Events: replayed after `Last-Event-ID` or "
          "`starting_after`, then live, until its final state (docs/sse.md)",
          query=schemas.StreamQuery, events=True),
    Route("GET", f"{API}/{{task_id}}/webhooks", webhooks.task_webhooks,
          "The task's webhook and every delivery attempt (status code, latency, error)",
          tags=("webhooks",)),
    Route("POST", f"{API}/{{task_id}}/webhooks/redeliver", webhooks.redeliver_webhook,
          "Send a delivery of the task's webhook again (default: the last one)",
          body=webhooks.RedeliverRequest, status=202, tags=("webhooks",), extra=IN_STATE),
    Route("GET", "/api/v1/webhooks/secret", webhooks.webhook_secret,
          "The key's owner's webhook signing secret (whsec_..., Standard Webhooks)",
          response=webhooks.WebhookSecretResponse, tags=("webhooks",)),
    Route("POST", "/api/v1/webhooks/secret/rotate", webhooks.rotate_webhook_secret,
          "A new signing secret; the old one signs beside it for 24 hours",
          response=webhooks.WebhookSecretResponse, tags=("webhooks",)),
    Route("GET", f"{API}/list", tasks.task_list, "Tasks, newest first",
          query=schemas.TaskListQuery, response=schemas.TaskListResponse),
    Route("GET", f"{API}/stats", tasks.task_stats, "Counts by state, queue depths, throughput",
          query=schemas.StatsQuery, response=schemas.StatsResponse),
    Route("POST", f"{API}/cancel/{{task_id}}", tasks.task_cancel, "Cancel a task",
          query=schemas.CancelQuery, response=schemas.CancelResponse, extra=IN_STATE),
    Route("POST", f"{API}/retry/{{task_id}}", tasks.task_retry,
          "Submit a failed or cancelled task again", response=schemas.RetryResponse, status=202,
          extra={"responses": {**IN_STATE["responses"],
                               "429": "an AI task, and its owner is over its budget"}}),
    Route("POST", f"{API}/bulk/cancel", bulk.bulk_cancel,
          "Cancel every unstarted task a filter selects (`dry_run`: count them), as a task",
          body=schemas.BulkRequest, response=schemas.SubmitResponse, status=202,
          extra=BULK_EXTRA),
    Route("POST", f"{API}/bulk/retry", bulk.bulk_retry,
          "Retry every failed or cancelled task a filter selects (`dry_run`: count them)",
          body=schemas.BulkRequest, response=schemas.SubmitResponse, status=202,
          extra=BULK_EXTRA),
    # Batches
    Route("POST", "/api/v1/batches", batches.create_batch,
          "Submit many tasks at once: JSON Lines, one `{task, body}` per line (up to 10,000)",
          query=schemas_batches.BatchCreateQuery, response=schemas_batches.BatchSubmitResponse,
          status=202, tags=("batches",),
          extra={"media": ("application/x-ndjson",
                           'one submission per line: {"task": "knowledge/vectorize", "body": '
                           '{...}}; task is a submission path under /api/v1/tasks'),
                 "responses": {"413": "more than 16 MB", "415": "not JSON Lines",
                               "422": "the Idempotency-Key was already used with a "
                                      "different request",
                               "429": "an AI item, and the owner is over its budget"}}),
    Route("GET", "/api/v1/batches/{batch_id}", batches.get_batch,
          "A batch's progress, its items' counts by state, and its items (paged)",
          query=schemas_batches.BatchQuery, response=schemas_batches.BatchResponse,
          tags=("batches",)),
    Route("POST", "/api/v1/batches/{batch_id}/cancel", batches.cancel_batch,
          "Cancel a batch: no more items submitted, those not started cancelled",
          response=schemas_batches.BatchCancelResponse, status=202, tags=("batches",),
          extra=IN_STATE),
    Route("GET", "/api/v1/catalog", catalog.catalog,
          "Queues, built-in task names and task states", response=schemas.CatalogResponse),
    Route("GET", f"{API}/health", tasks.health_report, "The last task-system health report",
          tags=("operations",), admin=True),
    # Knowledge base
    Route("GET", "/api/v1/knowledge", knowledge.knowledge_bases,
          "The caller's knowledge bases and their numbers of documents",
          query=schemas_tasks.OwnerQuery, response=schemas_tasks.KnowledgeBasesResponse,
          tags=("knowledge",)),
    Route("GET", "/api/v1/knowledge/{kb_id}/documents", knowledge.knowledge_documents,
          "The documents of a knowledge base (delete one: POST /tasks/knowledge/delete)",
          query=schemas_tasks.OwnerQuery, response=schemas_tasks.KnowledgeDocumentsResponse,
          tags=("knowledge",)),
    Route("GET", "/api/v1/knowledge/{kb_id}/search", knowledge.knowledge_search,
          "The chunks of a knowledge base best matching a query",
          query=schemas_tasks.KnowledgeSearchQuery,
          response=schemas_tasks.KnowledgeSearchResponse, tags=("knowledge",),
          extra={"responses": {"502": "the embedding provider refused the query"}}),
    # Live feed
    Route("GET", f"{API}/ws", live.websocket,
          "Live task feed (websocket upgrade; protocol in docs/websocket.md)", tags=("live",)),
    Route("POST", f"{API}/ws/ticket", live.ticket,
          "A single-use ticket to open the websocket from a browser", tags=("live",)),
    # Session (web UI)
    Route("POST", "/api/v1/session", session.login, "Log in with an API key (sets a cookie)",
          body=session.LoginRequest, tags=("session",), public=True,
          extra={"responses": {"401": "the API key is not known",
                               "403": "sent from another site's page (Origin)"}}),
    Route("GET", "/api/v1/session", session.whoami, "The logged-in principal",
          tags=("session",)),
    Route("DELETE", "/api/v1/session", session.logout, "Log out", tags=("session",)),
    # Workers (admin)
    Route("GET", f"{API}/workers", workers.list_workers, "Workers and what they are doing",
          response=schemas.WorkersResponse, tags=("workers",), admin=True),
    Route("POST", f"{API}/workers/pool/restart", workers.pool_restart,
          "Restart a worker's pool", query=schemas.PoolRestartQuery,
          response=schemas.WorkerControlResponse, tags=("workers",), admin=True,
          extra=WORKER_NAMED),
    Route("POST", f"{API}/workers/shutdown", workers.shutdown, "Shut a worker (or all) down",
          body=schemas.WorkerTarget, query=schemas.WorkerTarget,
          response=schemas.WorkerControlResponse, tags=("workers",), admin=True,
          extra=WORKER_NAMED),
]  # fmt: skip

# Usage and budgets
ROUTES += [
    Route("GET", "/api/v1/usage", usage.usage,
          "AI usage (tasks, tokens, cost, time to first token) per hour or day, by owner "
          "and model: a user key its own, an admin key everyone's",
          query=schemas_usage.UsageQuery, response=schemas_usage.UsageResponse,
          tags=("usage",)),
    Route("GET", "/api/v1/budgets/{owner}", budgets.get_budget,
          "An owner's AI budget: limits, what is used, when it resets",
          response=schemas_usage.BudgetResponse, tags=("usage",), admin=True),
    Route("PUT", "/api/v1/budgets/{owner}", budgets.put_budget,
          "Set an owner's AI budget (a limit left out or null: the default)",
          body=schemas_usage.BudgetRequest, response=schemas_usage.BudgetResponse,
          tags=("usage",), admin=True),
    Route("DELETE", "/api/v1/budgets/{owner}", budgets.delete_budget,
          "Remove an owner's own AI budget (the defaults apply again)",
          response=schemas_usage.BudgetResponse, tags=("usage",), admin=True),
]  # fmt: skip

# Owners' schedules
SCHEDULES = "/api/v1/schedules"
ROUTES += [
    Route("POST", SCHEDULES, schedules.create_schedule,
          "Schedule a submission on a cron expression or an interval: Beat fires it as "
          "the caller's task", body=schemas_schedules.ScheduleRequest,
          response=schemas_schedules.ScheduleResponse, status=201, tags=("schedules",),
          extra={"responses": {"404": "a knowledge base it names is not the caller's",
                               "409": "the caller has SCHEDULES_PER_OWNER schedules",
                               "422": "the Idempotency-Key was already used with a "
                                      "different request"},
                 "also": {"200": ("the same request again (Idempotency-Key): the first "
                                  "schedule", schemas_schedules.ScheduleResponse)}}),
    Route("GET", SCHEDULES, schedules.list_schedules,
          "The caller's schedules (an admin key: everyone's), oldest first",
          response=schemas_schedules.ScheduleListResponse, tags=("schedules",)),
    Route("GET", f"{SCHEDULES}/{{schedule_id}}", schedules.get_schedule,
          "A schedule, its next run and its runs so far",
          response=schemas_schedules.ScheduleResponse, tags=("schedules",)),
    Route("DELETE", f"{SCHEDULES}/{{schedule_id}}", schedules.delete_schedule,
          "Delete a schedule: Beat fires it no more", status=204, tags=("schedules",)),
]  # fmt: skip


def public_routes() -> frozenset[tuple[str, str]]:
    """(method, path) of the routes that answer without a key."""
    return frozenset((r.method, r.path) for r in ROUTES if r.public)


def admin_paths() -> frozenset[str]:
    return frozenset(r.path for r in ROUTES if r.admin)


def setup_routes(app: web.Application) -> None:
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)  # type: ignore[arg-type]
