"""`claw`: the task platform from a terminal. Reads CLAW_URL and CLAW_API_KEY.

    claw tasks list [--status S] [--queue Q] [--name N] [--limit N] [--cursor C] [--json]
    claw tasks status <id>
    claw tasks watch <id>          (output as it streams; exit 0 on SUCCESS, 1 otherwise)
    claw tasks cancel <id> [--terminate]
    claw tasks retry <id>
    claw ai "question" [--kb KB] [--conversation ID] [--model M]

An error answer prints its message to stderr and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from claw_client._sync import ClawClient
from claw_client.errors import ClawConnectionError, ClawError
from claw_client.sse import Event

COLUMNS = ("task_id", "status", "name", "queue", "submitted_at", "runtime")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="claw", description="The CLAW.AI task platform.")
    root.add_argument("--url", help="the gateway (default: CLAW_URL, http://127.0.0.1:8000)")
    root.add_argument("--api-key", help="default: CLAW_API_KEY")
    commands = root.add_subparsers(dest="command", required=True)

    tasks = commands.add_parser("tasks", help="list, inspect, follow, cancel, retry tasks")
    actions = tasks.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="tasks, newest first")
    listing.add_argument("--status")
    listing.add_argument("--queue")
    listing.add_argument("--name")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--cursor", help="the next page (printed under a full page)")
    listing.add_argument("--json", action="store_true", help="the API's JSON")
    for name, text in (("status", "a task's status"), ("watch", "follow a task to its end"),
                       ("retry", "submit a failed task again")):  # fmt: skip
        action = actions.add_parser(name, help=text)
        action.add_argument("task_id")
    cancel = actions.add_parser("cancel", help="cancel a task")
    cancel.add_argument("task_id")
    cancel.add_argument("--terminate", action="store_true", help="stop it if running (admin)")

    ai = commands.add_parser("ai", help="ask the model; the reply streams to the terminal")
    ai.add_argument("question")
    ai.add_argument("--kb", help="ground the answer in this knowledge base")
    ai.add_argument("--conversation", help="continue this conversation (default: a new one)")
    ai.add_argument("--model")
    return root


def _when(ts: Any) -> str:
    """A time of the API (ISO 8601, UTC; epoch seconds from older gateways), shortened."""
    if isinstance(ts, int | float):
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(ts, str):
        try:
            return datetime.fromisoformat(ts).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            return ts
    return ""


def table(tasks: Iterable[dict[str, Any]], out: TextIO) -> None:
    rows = [
        [
            str(t.get("task_id", "")), str(t.get("status", "")), str(t.get("name") or ""),
            str(t.get("queue") or ""), _when(t.get("submitted_at")),
            "" if t.get("runtime") is None else f"{t['runtime']:.2f}s",
        ]
        for t in tasks
    ]  # fmt: skip
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(COLUMNS)]
    for row in [list(COLUMNS), *rows]:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def follow(events: Iterable[Event], out: TextIO, err: TextIO) -> int:
    """Print a stream: chunks to `out` as they come, the rest to `err`; the exit code."""
    final: dict[str, Any] = {}
    for event in events:
        if event.event == "chunk":
            out.write(event.data.get("text", ""))
            out.flush()
        elif event.event == "chunks_reset":
            err.write("\n[retrying: the output starts again]\n")
        elif event.event == "waiting":
            err.write(f"[waiting: {event.data.get('reason', '')}]\n")
        elif event.event == "progress":
            err.write(f"[{event.data.get('percent', 0):.0f}%] {event.data.get('message', '')}\n")
        elif event.event == "state":
            err.write(f"[{event.data.get('state')}]\n")
            final = event.data.get("task") or final
        elif event.event == "submitted":
            err.write(f"[task {event.data.get('task_id')}]\n")
    if final.get("status") != "SUCCESS":
        if final.get("error"):
            err.write(f"error: {final['error']}\n")
        return 1
    return 0


def run(args: argparse.Namespace, client: ClawClient, out: TextIO, err: TextIO) -> int:
    if args.command == "ai":
        options: dict[str, Any] = {}
        if args.kb:
            options["knowledge_base_id"] = args.kb
        if args.model:
            options["model"] = args.model
        conversation = args.conversation or f"cli-{uuid.uuid4().hex[:12]}"
        code = follow(client.generate_stream(conversation, args.question, **options), out, err)
        out.write("\n")
        return code
    if args.action == "list":
        page = client.list(args.status, args.queue, args.name, args.limit, args.cursor)
        if args.json:
            json.dump(page, out, indent=2)
            out.write("\n")
            return 0
        table(page["tasks"], out)
        if page.get("next_cursor"):
            err.write(f"more: --cursor {page['next_cursor']}\n")
        return 0
    if args.action == "watch":
        return follow(client.stream(args.task_id), out, err)
    answer = {
        "status": lambda: client.status(args.task_id),
        "retry": lambda: client.retry(args.task_id),
        "cancel": lambda: client.cancel(args.task_id, terminate=args.terminate),
    }[args.action]()
    json.dump(answer, out, indent=2)
    out.write("\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with ClawClient(args.url, args.api_key) as client:
            return run(args, client, sys.stdout, sys.stderr)
    except ClawError as exc:
        sys.stderr.write(f"error {exc.status}: {exc.message}\n")
        if exc.details:
            sys.stderr.write(json.dumps(exc.details) + "\n")
        return 2
    except ClawConnectionError as exc:
        sys.stderr.write(f"cannot reach the gateway: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
