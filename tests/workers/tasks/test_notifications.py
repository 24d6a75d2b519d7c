"""send_notification through real workers: webhook (signed, retried, no SSRF), email, in-app."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import quote

import pytest

from service.schemas_tasks import SendNotificationRequest
from tests.support.fake_smtp import FakeSMTP
from tests.support.waiting import wait_until
from tests.support.webhook_server import SECRET, WebhookServer
from tests.workers.tasks.conftest import run_task
from workers.core import queues
from workers.core.keys import FEED_STREAM, task_key
from workers.core.settings import load_settings
from workers.notify.inbox import deliver, read_inbox
from workers.notify.targets import TargetPolicy, TargetRefused, resolve

QUEUE = "tests_notifications"
SEND = queues.SEND_NOTIFICATION


@pytest.fixture(scope="module")
def webhooks():
    server = WebhookServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def smtp():
    server = FakeSMTP().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def notify_worker(redis_url, log_dir, smtp, webhooks):
    from tests.support.processes import start_worker

    env = {
        **smtp.env(), "WEBHOOK_SECRET": SECRET, "WEBHOOK_TIMEOUT": "0.5",
        # Only the local receiver is let through; every other private target is refused.
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32", "RETRY_BACKOFF_BASE": "0.3",
        "INBOX_MAX": "3",
    }  # fmt: skip
    w = start_worker(redis_url, log_dir, queues=QUEUE, concurrency=2, name="notify", env=env)
    yield w
    w.stop()


def name() -> str:
    return uuid.uuid4().hex[:10]


def test_webhook_is_delivered_with_a_valid_hmac_signature(
    notify_worker, webhooks, celery_app
) -> None:
    hook = name()
    done = run_task(celery_app, SEND, QUEUE, channel="webhook",
                    recipient=f"{webhooks.base_url}/hook/{hook}", message="Build finished",
                    subject="CI", data={"build": 42})  # fmt: skip
    assert done.state == "SUCCESS", done.result
    [delivery] = webhooks.deliveries[hook]
    assert delivery["valid"]
    assert delivery["json"] == {"id": done.id, "subject": "CI", "message": "Build finished",
                                "data": {"build": 42}}  # fmt: skip
    assert delivery["headers"]["X-Claw-Delivery"] == done.id


def test_webhook_5xx_and_timeouts_are_retried(notify_worker, webhooks, celery_app, rclient):
    flaky, slow = name(), name()
    first = run_task(celery_app, SEND, QUEUE, channel="webhook",
                     recipient=f"{webhooks.base_url}/flaky/{flaky}", message="m")  # fmt: skip
    second = run_task(celery_app, SEND, QUEUE, channel="webhook",
                      recipient=f"{webhooks.base_url}/slow/{slow}", message="m")  # fmt: skip
    assert first.state == "SUCCESS" and second.state == "SUCCESS"
    assert len(webhooks.deliveries[flaky]) == 1 and len(webhooks.deliveries[slow]) == 1
    assert rclient.hget(task_key(first.id), "retries") == "1"
    assert rclient.hget(task_key(second.id), "retries") == "1"


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://0xa9fea9fe/latest/meta-data/",  # the same, in hex
        "http://2852039166/",  # the same, as one decimal number
        "http://10.0.0.7/hook",  # private
        "http://[::1]:80/hook",  # IPv6 loopback
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",  # NAT64 of the metadata address
        "http://[2002:a9fe:a9fe::1]/",  # 6to4 of it
        "http://[::10.0.0.7]/hook",  # IPv4-compatible private
        "http://[::ffff:0:a00:1]/hook",  # IPv4-translated 10.0.0.1
        "http://[fec0::1]/hook",  # site-local
    ],
)
def test_webhook_to_private_or_metadata_targets_is_refused(
    notify_worker, celery_app, rclient, target
) -> None:
    done = run_task(celery_app, SEND, QUEUE, channel="webhook", recipient=target, message="m")
    assert done.state == "FAILURE"
    assert "private or reserved" in str(done.result)
    # Refused before any connection: a connection attempt would fail as "unreachable"
    # (a transient error) and be retried.
    assert rclient.hget(task_key(done.id), "retries") in (None, "0")


def test_webhook_redirect_to_an_ipv4_carrying_ipv6_target_is_refused(
    notify_worker, webhooks, celery_app, rclient
) -> None:
    for to in ("http://[64:ff9b::a9fe:a9fe]/", "http://[2002:a00:1::1]/",
               "http://[::ffff:0:a00:1]/", "http://[fec0::1]/"):  # fmt: skip
        url = f"{webhooks.base_url}/redirect?to={quote(to, safe='')}"
        done = run_task(celery_app, SEND, QUEUE, channel="webhook", recipient=url, message="m")
        assert done.state == "FAILURE" and "private or reserved" in str(done.result), to
        assert rclient.hget(task_key(done.id), "retries") in (None, "0"), to


def test_a_refused_name_does_not_reveal_what_it_resolves_to(notify_worker, celery_app) -> None:
    done = run_task(celery_app, SEND, QUEUE, channel="webhook",
                    recipient="http://localhost:9/hook", message="m")  # fmt: skip
    assert done.state == "FAILURE"
    error = str(done.result)
    assert "localhost" in error and "refused" in error
    assert "127.0.0.1" not in error and "::1" not in error


def test_webhook_redirect_to_a_private_target_is_refused(
    notify_worker, webhooks, celery_app
) -> None:
    url = f"{webhooks.base_url}/redirect?to=http://169.254.169.254/latest/meta-data/"
    done = run_task(celery_app, SEND, QUEUE, channel="webhook", recipient=url, message="m")
    assert done.state == "FAILURE" and "169.254.169.254" in str(done.result)


def test_dns_names_are_resolved_and_every_address_checked() -> None:
    with pytest.raises(TargetRefused, match="resolves to a private"):
        resolve("http://localhost:9/", TargetPolicy())
    allowed = TargetPolicy.from_settings(False, "127.0.0.0/8, ::1/128")
    assert resolve("http://localhost:9/x?y=1", allowed).path == "/x?y=1"


def test_a_name_that_does_not_resolve_is_refused_like_a_private_one() -> None:
    """One error for both: a user cannot probe which internal names exist."""
    errors = []
    for host in ("localhost", f"no-such-host-{uuid.uuid4().hex[:8]}.invalid"):
        with pytest.raises(TargetRefused) as refused:
            resolve(f"http://{host}:9/", TargetPolicy())
        errors.append(str(refused.value).replace(host, "HOST"))
    assert errors[0] == errors[1]


def test_email_goes_through_smtp_with_login(notify_worker, smtp, celery_app) -> None:
    subject = f"Report {name()}"
    done = run_task(celery_app, SEND, QUEUE, channel="email", recipient="alice@example.com",
                    subject=subject, message="Your weekly report is ready.")  # fmt: skip
    assert done.state == "SUCCESS", done.result
    message = wait_until(lambda: next((m for m in smtp.messages if m["Subject"] == subject),
                                      None), 5)  # fmt: skip
    assert message["To"] == "alice@example.com" and message["From"] == "claw@test.local"
    assert message["X-Test-Login"] == "mailer"
    assert "weekly report" in message.get_payload()


def test_in_app_goes_to_a_capped_inbox_and_the_users_feed(
    notify_worker, celery_app, rclient
) -> None:
    user = f"user_{name()}"
    since = int(time.time() * 1000) - 1
    for i in range(5):
        done = run_task(celery_app, SEND, QUEUE, channel="in_app", recipient=user,
                        message=f"note {i}")  # fmt: skip
        assert done.state == "SUCCESS", done.result
    inbox = read_inbox(rclient, user)
    assert [n["message"] for n in inbox] == ["note 4", "note 3", "note 2"]  # INBOX_MAX=3
    events = [json.loads(f["event"]) for _, f in rclient.xrange(FEED_STREAM, f"{since}-0", "+")]
    mine = [e for e in events if e.get("type") == "notification" and e.get("owner") == user]
    assert [e["notification"]["message"] for e in mine] == [f"note {i}" for i in range(5)]


def test_a_user_id_with_a_colon_has_its_own_inbox(rclient) -> None:
    # "<u>:delivered" is a valid user id; its inbox must not be the delivered set of "<u>".
    user = f"user_{name()}"
    assert deliver(rclient, user, {"message": "to u"}, 3, f"{user}-1")
    assert deliver(rclient, f"{user}:delivered", {"message": "to u:delivered"}, 3, f"{user}-2")
    assert deliver(rclient, user, {"message": "again"}, 3, f"{user}-3")
    assert [n["message"] for n in read_inbox(rclient, user)] == ["again", "to u"]
    assert [n["message"] for n in read_inbox(rclient, f"{user}:delivered")] == ["to u:delivered"]
    assert not deliver(rclient, user, {"message": "to u"}, 3, f"{user}-1")  # a redelivery


def test_submission_refuses_unknown_channels_and_bad_addresses() -> None:
    settings = load_settings(webhook_secret="s", smtp_host="mail.example.com")
    schema = SendNotificationRequest(settings=settings)
    cases = {
        "channel": {"channel": "pigeon", "recipient": "x", "message": "m"},
        "recipient": {"channel": "email", "recipient": "not-an-address", "message": "m"},
    }
    for field, body in cases.items():
        assert field in schema.validate(body), body
    for url in ("ftp://example.com/x", "http://0x7f000001/", "http://127.1/", "http://[::1]/"):
        errors = schema.validate({"channel": "webhook", "recipient": url, "message": "m"})
        assert "recipient" in errors, url
    ok = {"channel": "webhook", "recipient": "https://hooks.example.com/x", "message": "m"}
    assert schema.validate(ok) == {}
    unconfigured = SendNotificationRequest(settings=load_settings(webhook_secret=None))
    assert "channel" in unconfigured.validate(ok)
