"""`make run`: the whole platform in the foreground, from the Procfile, through honcho.

Starts a private Redis first when REDIS_URL is not set (data under `var/redis`), and
stops it last, after every Procfile process has exited.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from workers.core.settings import Settings, SettingsError, get_settings, redact_url
from workers.dev.embedded_redis import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REDIS_PORT = 6379
# honcho's "web.1 stopped (rc=-15)": how each process ended when make run was stopped.
STOPPED_BY_SIGNAL = re.compile(r"(\S+) stopped \(rc=-(?:2|15)\)")


def _redis_url_configured() -> bool:
    if os.environ.get("REDIS_URL"):
        return True
    env_file = Path(".env")
    if env_file.exists():
        return any(
            line.strip().startswith("REDIS_URL=") for line in env_file.read_text().splitlines()
        )
    return False


def main() -> int:
    try:
        settings = get_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"

    redis_server = None
    if not _redis_url_configured():
        var_dir = ROOT / settings.var_dir
        redis_server = EmbeddedRedis(
            var_dir / "redis", port=free_port(DEFAULT_REDIS_PORT), logfile=var_dir / "redis.log"
        ).start()
        env["REDIS_URL"] = redis_server.url
        print(f"devstack: private Redis on {redis_server.url} (data in {var_dir})", flush=True)
    else:
        print(f"devstack: using Redis at {redact_url(settings.redis_url)}", flush=True)

    procfile = dev_procfile(ROOT / settings.var_dir)
    honcho = subprocess.Popen(
        [str(Path(bin_dir) / "honcho"), "start", "-f", str(procfile),
         "-d", str(ROOT), "-p", str(settings.port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    interrupted = False

    def relay() -> None:
        """honcho's output, as it comes; after Ctrl-C a process ended by the stop signal
        is reported as stopped, not with a return code that reads like an error."""
        assert honcho.stdout is not None
        for raw in honcho.stdout:
            line = raw.decode(errors="replace")
            if interrupted:
                line = STOPPED_BY_SIGNAL.sub(r"\1 stopped", line)
            sys.stdout.write(line)
            sys.stdout.flush()

    relaying = threading.Thread(target=relay, daemon=True)
    relaying.start()

    def forward(signum: int, _frame: object) -> None:
        nonlocal interrupted
        interrupted = True
        if honcho.poll() is None:
            honcho.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    threading.Thread(
        target=announce, args=(settings, env["REDIS_URL"] if redis_server else None, honcho),
        daemon=True,
    ).start()  # fmt: skip
    try:
        code = honcho.wait()
        relaying.join(5)
    finally:
        if redis_server is not None:
            redis_server.stop()
    if interrupted:
        print("devstack: stopped.", flush=True)
        return 0  # Ctrl-C is how make run is meant to end
    return code


def dev_procfile(var_dir: Path) -> Path:
    """The Procfile, with the worker kept running across a requested shutdown
    (workers/dev/keep_running.py)."""
    lines = []
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == "worker":
            line = f"{name}: python -m workers.dev.keep_running {command.strip()}"
        lines.append(line)
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / "Procfile.dev"
    path.write_text("\n".join(lines) + "\n")
    return path


def announce(settings: Settings, private_redis: str | None, honcho: subprocess.Popen) -> None:
    """Once the gateway answers: one block of addresses and credentials."""
    base = f"http://127.0.0.1:{settings.port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and honcho.poll() is None:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2):  # noqa: S310 (http, ours)
                break
        except OSError:
            time.sleep(0.5)
    else:
        return
    print(address_block(settings, private_redis), flush=True)


def address_block(settings: Settings, private_redis: str | None) -> str:
    """The addresses and credentials `make run` prints once the gateway answers."""
    base = f"http://127.0.0.1:{settings.port}"
    dev = not settings.api_keys.get_secret_value()
    flower_password = settings.flower_password.get_secret_value()
    rows = [
        ("dashboard", base, "no login: development mode (loopback only)" if dev
         else "log in with a key of API_KEYS"),
        ("REST API", f"{base}/api/v1/tasks/...",
         f"docs: {base}/api/docs (OpenAPI: {base}/api/v1/openapi.json)"),
        ("health", f"{base}/healthz", "or /health"),
        ("Flower", f"http://{settings.flower_address}:{settings.flower_port}",
         f"{settings.flower_user} / {flower_password}"),
        ("Redis", private_redis or redact_url(settings.redis_url),
         "private, data in " + settings.var_dir if private_redis else ""),
    ]  # fmt: skip
    width = max(len(r[1]) for r in rows)
    block = ["", "CLAW.AI is running:"]
    block += [f"  {name:<10} {url:<{width}}  {note}".rstrip() for name, url, note in rows]
    block += ["  Ctrl-C stops everything.", ""]
    return "\n".join(block)


if __name__ == "__main__":
    sys.exit(main())
