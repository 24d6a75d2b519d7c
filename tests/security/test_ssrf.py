"""Webhook SSRF matrix through a real worker: 0 connections to any forbidden address.

Each target is a forbidden address in some spelling (IPv4 literal forms, IPv6, an IPv6
address carrying a forbidden IPv4 one: NAT64, 6to4, Teredo, IPv4-compatible/-translated),
or a name resolving to one, or an allowed receiver that redirects to one. A TCP listener
on 127.0.0.1 (and ::1) counts every connection it accepts: loopback targets aim at it, so
a guard that let one through would show up as an accept. Non-loopback targets (private
ranges, metadata, ULA, IPv4-carrying IPv6) are never contacted for real: the task must
fail with the refusal error at once (well under the webhook timeout a connection attempt
would take), without retrying.

The one allowed receiver is a redirector on 127.0.0.2 (`WEBHOOK_ALLOWED_NETWORKS`), so
"allowed" and "forbidden" are both on loopback and nothing leaves the machine.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from tests.support.waiting import wait_for_state, wait_until
from workers.core import queues
from workers.notify.targets import (
    TargetPolicy,
    TargetRefused,
    check_literal,
    embedded_ipv4,
    literal_address,
    resolve,
)
from workers.taskindex.index import task_key

pytestmark = pytest.mark.slow

QUEUE = "tests_security_ssrf"
WEBHOOK_TIMEOUT = 5.0  # a real connection attempt to an unroutable address takes this long
ALLOWED = "127.0.0.2"
REFUSALS = ("private or reserved", "does not resolve")


class _Counting(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple, handler: type, family: int = socket.AF_INET) -> None:
        self.address_family = family
        self.accepts = 0
        self.lock = threading.Lock()
        super().__init__(address, handler)

    def count(self) -> None:
        with self.lock:
            self.accepts += 1


class _Answer(socketserver.StreamRequestHandler):
    """Counts the connection; answers 200 (forbidden listener) or 307 (redirector)."""

    def handle(self) -> None:
        self.server.count()  # type: ignore[attr-defined]
        self.connection.settimeout(2)
        try:
            request_line = self.rfile.readline().decode("latin-1")
        except OSError:
            return
        target = parse_qs(urlsplit(request_line.split(" ")[1] if " " in request_line else "/")
                          .query).get("to")  # fmt: skip
        if target:
            head = f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {target[0]}\r\n"
        else:
            head = "HTTP/1.1 200 OK\r\n"
        self.wfile.write(f"{head}Content-Length: 0\r\nConnection: close\r\n\r\n".encode())


def _serve(host: str, family: int = socket.AF_INET, port: int = 0) -> _Counting:
    server = _Counting((host, port), _Answer, family)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def listeners() -> Iterator[dict[str, _Counting]]:
    v4 = _serve("127.0.0.1")
    port = v4.server_address[1]
    servers = {"v4": v4, "redirector": _serve(ALLOWED)}
    try:
        servers["v6"] = _serve("::1", socket.AF_INET6, port)
    except OSError:
        pass  # no IPv6 loopback here: the v6 targets are still refused, just not counted
    yield servers
    for server in servers.values():
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def ssrf_worker(redis_url, log_dir) -> Iterator[object]:
    from tests.support.processes import start_worker

    env = {
        "WEBHOOK_SECRET": "ssrf-test-secret", "WEBHOOK_TIMEOUT": str(WEBHOOK_TIMEOUT),
        "WEBHOOK_ALLOWED_NETWORKS": f"{ALLOWED}/32", "ALLOW_PRIVATE_WEBHOOK_TARGETS": "false",
        "RETRY_BACKOFF_BASE": "0.2",
    }  # fmt: skip
    worker = start_worker(redis_url, log_dir, queues=QUEUE, concurrency=2, name="ssrf", env=env)
    yield worker
    worker.stop()


def loopback_targets(port: int) -> list[str]:
    """Spellings of this host's loopback; every one aims at the counting listener."""
    hostname = socket.gethostname()
    return [
        f"http://127.0.0.1:{port}/",
        f"http://127.1:{port}/",  # short form
        f"http://0x7f000001:{port}/",  # hex
        f"http://0x7f.0x0.0x0.0x1:{port}/",  # hex per part
        f"http://2130706433:{port}/",  # one decimal number
        f"http://0177.0.0.1:{port}/",  # octal
        f"http://017700000001:{port}/",  # one octal number
        f"http://127.0.0.1.:{port}/",  # trailing dot
        f"http://0.0.0.0:{port}/",  # unspecified: Linux connects it to this host
        f"http://0:{port}/",
        f"http://[::1]:{port}/",  # IPv6 loopback
        f"http://[0:0:0:0:0:0:0:1]:{port}/",
        f"http://[::ffff:127.0.0.1]:{port}/",  # IPv4-mapped
        f"http://[::ffff:7f00:1]:{port}/",
        f"http://[::]:{port}/",
        f"http://localhost:{port}/",  # names resolving to loopback
        f"http://LOCALHOST.:{port}/",
        f"http://{hostname}:{port}/",
        f"https://localhost:{port}/",
    ]


# Never contacted for real: refused before any connection, or it would hang on the timeout.
REMOTE_TARGETS = [
    "http://10.0.0.1/hook", "http://10.255.255.254/", "http://172.16.0.1/",
    "http://172.31.255.254/", "http://192.168.0.1/", "http://192.168.255.255/",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://169.254.0.1/", "http://[fe80::1]/",  # link-local
    "http://0xa9fea9fe/latest/meta-data/", "http://2852039166/",  # metadata, hex / decimal
    "http://0251.0376.0251.0376/", "http://169.254.43518/",  # octal / short
    "http://[::ffff:169.254.169.254]/", "http://[fd00::1]/", "http://[fc00::1]/",  # ULA
    "http://[fd00:ec2::254]/",  # AWS IPv6 metadata
    "http://100.64.0.1/",  # carrier-grade NAT (shared)
    "http://224.0.0.1/", "http://255.255.255.255/", "http://240.0.0.1/",
    "http://192.0.0.1/", "http://198.18.0.1/",
]  # fmt: skip

# IPv6 addresses that carry a forbidden IPv4 address (a NAT64 translator, 6to4 or Teredo
# relay on the path delivers them there), and site-local. Python's `is_global` calls every
# one of the first six global: the guard must decode them itself.
EMBEDDED_TARGETS = [
    "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",  # NAT64 of 169.254.169.254
    "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
    "http://[64:ff9b::10.0.0.1]/",
    "http://[64:ff9b:1::a9fe:a9fe]/",  # local-use NAT64 prefix (/96 layout)
    "http://[64:ff9b:1:a9fe:a9:fe00::]/",  # local-use NAT64 prefix (/48 layout)
    "http://[2002:a9fe:a9fe::1]/",  # 6to4 of 169.254.169.254
    "http://[2002:0a00:0001::]/",  # 6to4 of 10.0.0.1
    "http://[2002:7f00:1::1]/",  # 6to4 of 127.0.0.1
    "http://[::127.0.0.1]/",  # IPv4-compatible
    "http://[::a9fe:a9fe]/", "http://[::10.0.0.1]/",
    "http://[::ffff:0:a00:1]/",  # IPv4-translated (RFC 2765) of 10.0.0.1
    "http://[::ffff:0:7f00:1]/", "http://[::ffff:0:169.254.169.254]/",
    "http://[2001:0:a9fe:a9fe::]/",  # Teredo, server 169.254.169.254
    "http://[2001:0:808:808::f5ff:fffe]/",  # Teredo, public server, client 10.0.0.1
    "http://[2001:0:808:808::80ff:fffe]/",  # Teredo, client 127.0.0.1
    "http://[fec0::1]/", "http://[fec0::a9fe:a9fe]/", "http://[feff::1]/",  # site-local
    "http://[2001:db8::1]/", "http://[100::1]/",  # documentation, discard
]  # fmt: skip


def redirect_targets(port: int, redirector: int) -> list[str]:
    """An allowed receiver that answers 307 to a forbidden target."""
    forbidden = [
        f"http://127.0.0.1:{port}/", f"http://localhost:{port}/", f"http://0x7f000001:{port}/",
        f"http://2130706433:{port}/", f"http://[::1]:{port}/", f"http://0177.0.0.1:{port}/",
        "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://[fd00::1]/",
        "http://192.168.1.1/", "http://172.16.0.1/", "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::1]/", "http://[::127.0.0.1]/", "http://[::ffff:0:a00:1]/",
        "http://[fec0::1]/",
    ]  # fmt: skip
    return [f"http://{ALLOWED}:{redirector}/r?to={quote(t, safe='')}" for t in forbidden]


def _finished_record(client, key: str) -> dict | None:
    record = client.hgetall(key)
    return record if record.get("finished_at") else None


def _port(listeners: dict[str, _Counting], name: str) -> int:
    return listeners[name].server_address[1]


def test_the_guard_refuses_every_form_without_a_worker(listeners) -> None:
    """The same matrix against the guard itself: literals refused before DNS, names after."""
    policy = TargetPolicy.from_settings(False, f"{ALLOWED}/32")
    for url in loopback_targets(_port(listeners, "v4")) + REMOTE_TARGETS + EMBEDDED_TARGETS:
        with pytest.raises(TargetRefused):
            resolve(url, policy)
        if literal_address(urlsplit(url).hostname or "") is not None:
            with pytest.raises(TargetRefused):
                check_literal(url, policy)
    assert listeners["v4"].accepts == 0


@pytest.mark.parametrize(
    ("address", "carried"),
    [
        ("::ffff:169.254.169.254", ["169.254.169.254"]),  # IPv4-mapped
        ("::ffff:0:a00:1", ["10.0.0.1"]),  # IPv4-translated
        ("::127.0.0.1", ["127.0.0.1"]),  # IPv4-compatible
        ("64:ff9b::a9fe:a9fe", ["169.254.169.254"]),  # NAT64
        ("64:ff9b:1::a9fe:a9fe", ["0.0.0.0", "0.0.0.0", "0.0.0.169", "169.254.169.254"]),
        ("2002:a9fe:a9fe::1", ["169.254.169.254"]),  # 6to4
        # Teredo, RFC 4380's example: server 65.54.227.120, client 192.0.2.45 (inverted).
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", ["65.54.227.120", "192.0.2.45"]),
        ("2606:4700::1111", []),  # a plain IPv6 address carries none
        ("fec0::1", []),
    ],
)
def test_the_ipv4_carried_in_an_ipv6_address_is_decoded(address: str, carried: list) -> None:
    assert [str(a) for a in embedded_ipv4(ipaddress.IPv6Address(address))] == carried


def test_the_policy_judges_an_ipv6_address_by_the_ipv4_it_carries() -> None:
    policy = TargetPolicy()
    for url in EMBEDDED_TARGETS:
        host = urlsplit(url).hostname
        assert not policy.permits(ipaddress.ip_address(host)), url
    # The same forms carrying a public address, and plain public addresses, are let
    # through: the refusals above are about what is carried, not the form.
    for public in ("64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8", "8.8.8.8",
                   "2001:0:808:808::f7f7:f7f7", "2606:4700::1111"):  # fmt: skip
        assert policy.permits(ipaddress.ip_address(public)), public
    # An allowed network counts for the carried address as for the plain one.
    allowed = TargetPolicy.from_settings(False, "10.0.0.0/8")
    assert allowed.permits(ipaddress.ip_address("64:ff9b::a00:1"))
    assert not allowed.permits(ipaddress.ip_address("64:ff9b::a9fe:a9fe"))


def test_no_forbidden_address_is_ever_connected(ssrf_worker, listeners, celery_app, rclient):
    port, redirector = _port(listeners, "v4"), _port(listeners, "redirector")
    direct = loopback_targets(port) + REMOTE_TARGETS + EMBEDDED_TARGETS
    redirects = redirect_targets(port, redirector)
    sent = {}
    for url in direct + redirects:
        result = celery_app.send_task(
            queues.SEND_NOTIFICATION, queue=QUEUE,
            kwargs={"channel": "webhook", "recipient": url, "message": uuid.uuid4().hex},
        )  # fmt: skip
        sent[url] = result
    began = time.monotonic()
    problems = []
    for url, result in sent.items():
        done = wait_for_state(celery_app, result.id, {"SUCCESS", "FAILURE"}, timeout=60)
        # The result backend's write lands a moment before the task index's.
        key = task_key(result.id)
        record = wait_until(
            functools.partial(_finished_record, rclient, key), 10, what=f"{key} finished"
        )
        runtime = float(record["finished_at"]) - float(record["started_at"])
        error = str(done.result)
        if done.state != "FAILURE" or not any(r in error for r in REFUSALS):
            problems.append(f"{url}: {done.state} {error}")
        elif runtime > 1.0 or record.get("retries", "0") != "0":
            problems.append(f"{url}: refused only after {runtime:.2f}s / retries (connected?)")
    print(f"{len(sent)} targets refused in {time.monotonic() - began:.1f}s")
    assert not problems, "\n".join(problems)
    # 0 connections reached any forbidden listener; the allowed redirector saw each redirect.
    assert listeners["v4"].accepts == 0
    if "v6" in listeners:
        assert listeners["v6"].accepts == 0
    assert listeners["redirector"].accepts == len(redirects)


def test_the_allowed_receiver_is_reachable(ssrf_worker, listeners, celery_app) -> None:
    """Control: the same worker does deliver to the allowed network (the matrix above
    fails for the right reason, not because nothing can be delivered)."""
    url = f"http://{ALLOWED}:{_port(listeners, 'redirector')}/hook"
    before = listeners["redirector"].accepts
    result = celery_app.send_task(
        queues.SEND_NOTIFICATION, queue=QUEUE,
        kwargs={"channel": "webhook", "recipient": url, "message": "hello"},
    )  # fmt: skip
    done = wait_for_state(celery_app, result.id, {"SUCCESS", "FAILURE"}, timeout=30)
    assert done.state == "SUCCESS", done.result
    assert listeners["redirector"].accepts == before + 1
