"""`make run`: the whole platform in the foreground, from the Procfile, through honcho.

Starts a private Redis first when REDIS_URL is not set (data under `var/redis`), and
stops it last, after every Procfile process has exited.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from workers.core.settings import SettingsError, get_settings, redact_url
from workers.dev.embedded_redis import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REDIS_PORT = 6379


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

    honcho = subprocess.Popen(
        [str(Path(bin_dir) / "honcho"), "start", "-f", str(ROOT / "Procfile"),
         "-d", str(ROOT), "-p", str(settings.port)],
        env=env,
    )  # fmt: skip

    def forward(signum: int, _frame: object) -> None:
        if honcho.poll() is None:
            honcho.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        code = honcho.wait()
    finally:
        if redis_server is not None:
            redis_server.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
