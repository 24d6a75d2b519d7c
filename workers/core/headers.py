"""The names of the message headers the platform adds to Celery's, in one place."""

# The API key's owner of a task: the namespace of its conversations and knowledge bases.
OWNER_HEADER = "claw_owner"
RETRIED_FROM_HEADER = "claw_retried_from"
# A task's tags and metadata (`workers.taskindex.labels`), for publishers other than the
# gateway (which writes them into the record itself): a retry, a recovery, a Python client.
TAGS_HEADER = "claw_tags"
METADATA_HEADER = "claw_metadata"
# A task's completion webhook ({"url", "events"}), carried like its tags: a retry keeps it.
# Each delivery still checks the address against the webhook policy.
WEBHOOK_HEADER = "claw_webhook"
# The batch a task is an item of (workers/tasks/batches.py publishes them).
BATCH_HEADER = "claw_batch"
# Set by a publisher that wrote the task's record itself (the gateway), before publishing.
INDEXED_HEADER = "claw_indexed"
# Set on a duplicate delivery put back to be checked later (see ClawRequest): not a new task.
DEFERRED_HEADER = "claw_deferred"
# A new task's record (`workers.taskindex.lua_scripts.RecordUpdate.to_header`), from the
# `before_task_publish` receiver to the code that writes it: our transport writes it with
# the message and never stores this header with it (`workers.runtime.priority`); with
# another transport the `after_task_publish` receiver writes it.
RECORD_HEADER = "claw_record"
# The owner's schedule (`workers.runtime.schedules`) a task was sent for, by Beat.
SCHEDULE_HEADER = "claw_schedule"
