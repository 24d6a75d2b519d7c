"""The queues and which built-in task goes to which: the routing contract, as data."""

from __future__ import annotations

AI_HIGH_PRIORITY = "ai_high_priority"
KNOWLEDGE_DEFAULT = "knowledge_default"
NOTIFICATION_DEFAULT = "notification_default"
DEFAULT = "default"

QUEUES = (AI_HIGH_PRIORITY, KNOWLEDGE_DEFAULT, NOTIFICATION_DEFAULT, DEFAULT)

# Task names (the gateway sends tasks by these names and never imports task code).
GENERATE_AI_RESPONSE = "generate_ai_response"
SEND_NOTIFICATION = "send_notification"
CLEANUP_EXPIRED_RESULTS = "cleanup_expired_results"
CHECK_TASK_HEALTH = "check_task_health"
VECTORIZE_DOCUMENT = "vectorize_document"
UPDATE_KNOWLEDGE_BASE = "update_knowledge_base"
DELETE_KNOWLEDGE_VECTORS = "delete_knowledge_vectors"
RECOVER_LOST_TASKS = "recover_lost_tasks"
DELIVER_TASK_WEBHOOK = "deliver_task_webhook"
BULK_ACTION = "bulk_action"
RUN_BATCH = "run_batch"
FINISH_BATCH = "finish_batch"

# The platform's own housekeeping: hidden from task lists unless asked for (`system=true`).
SYSTEM_TASKS = frozenset(
    {CLEANUP_EXPIRED_RESULTS, CHECK_TASK_HEALTH, RECOVER_LOST_TASKS, DELIVER_TASK_WEBHOOK}
)

TASK_QUEUES = {
    GENERATE_AI_RESPONSE: AI_HIGH_PRIORITY,
    SEND_NOTIFICATION: NOTIFICATION_DEFAULT,
    CLEANUP_EXPIRED_RESULTS: DEFAULT,
    CHECK_TASK_HEALTH: DEFAULT,
    VECTORIZE_DOCUMENT: KNOWLEDGE_DEFAULT,
    UPDATE_KNOWLEDGE_BASE: KNOWLEDGE_DEFAULT,
    DELETE_KNOWLEDGE_VECTORS: KNOWLEDGE_DEFAULT,
    RECOVER_LOST_TASKS: DEFAULT,
    DELIVER_TASK_WEBHOOK: NOTIFICATION_DEFAULT,
    BULK_ACTION: DEFAULT,
    RUN_BATCH: DEFAULT,
    FINISH_BATCH: DEFAULT,
}

# The source document's qualified names (its module `app.tasks.ai_tasks` and
# `app.tasks.knowledge_tasks`): accepted as aliases of the built-in tasks. A message sent
# by such a name is routed like the short name, renamed to it when our app publishes it,
# and run by the same task when another client sends it as it is.
DOCUMENT_ALIASES = {
    "app.tasks.ai_tasks.generate_ai_response": GENERATE_AI_RESPONSE,
    "app.tasks.ai_tasks.send_notification": SEND_NOTIFICATION,
    "app.tasks.ai_tasks.cleanup_expired_results": CLEANUP_EXPIRED_RESULTS,
    "app.tasks.ai_tasks.check_task_health": CHECK_TASK_HEALTH,
    "app.tasks.knowledge_tasks.vectorize_document": VECTORIZE_DOCUMENT,
    "app.tasks.knowledge_tasks.update_knowledge_base": UPDATE_KNOWLEDGE_BASE,
    "app.tasks.knowledge_tasks.delete_knowledge_vectors": DELETE_KNOWLEDGE_VECTORS,
}


def canonical_name(name: str) -> str:
    """The built-in task's own name for one of the document's names; others unchanged."""
    return DOCUMENT_ALIASES.get(name, name)
