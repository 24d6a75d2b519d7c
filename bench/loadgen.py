"""wrk, a load generator written in C: the HTTP rows are its numbers, not a Python
client's (a Python client caps a bare aiohttp handler at a fraction of what it serves).

Installed through apt when missing and running as root, like Chromium for the browser
test; otherwise the bench says how to install it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

WRK = "wrk"


def ensure_wrk() -> str:
    found = shutil.which(WRK)
    if found:
        return found
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        raise RuntimeError("the HTTP benches need wrk: apt-get install wrk (as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run([apt, "install", "-y", "-qq", "--no-install-recommends", "wrk"],
                   check=True, env=env, capture_output=True)  # fmt: skip
    found = shutil.which(WRK)
    if found is None:
        raise RuntimeError("apt-get installed wrk but it is not on PATH")
    return found


@dataclass
class Load:
    per_second: float
    requests: int
    non_2xx: int
    socket_errors: int

    def note(self) -> str:
        errors = f"{self.non_2xx} non-2xx, {self.socket_errors} socket errors"
        return f"{self.requests:,} requests, {errors}"


def _lua_post(body: Any, headers: dict[str, str]) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(body))}",
             'wrk.headers["Content-Type"] = "application/json"']  # fmt: skip
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def _count(pattern: str, text: str) -> int:
    return sum(int(n) for n in re.findall(pattern, text))


def wrk(
    url: str, seconds: float, *, connections: int = 32, threads: int = 1,
    post: Any = None, headers: dict[str, str] | None = None,
) -> Load:  # fmt: skip
    """`connections` keep-alive connections from `threads` wrk threads for `seconds`; a
    JSON `post` body makes every request a POST of it."""
    argv = [ensure_wrk(), "-t", str(threads), "-c", str(connections),
            "-d", f"{max(1, round(seconds))}s", "--timeout", "10s"]  # fmt: skip
    script = None
    if post is not None:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(_lua_post(post, headers or {}))
        script.close()
        argv += ["-s", script.name]
    else:
        for key, value in (headers or {}).items():
            argv += ["-H", f"{key}: {value}"]
    try:
        out = subprocess.run([*argv, url], capture_output=True, text=True, check=True,
                             timeout=seconds + 60).stdout  # fmt: skip
    finally:
        if script is not None:
            os.unlink(script.name)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rate is None or total is None:
        raise RuntimeError(f"unreadable wrk output:\n{out}")
    return Load(
        per_second=float(rate.group(1)),
        requests=int(total.group(1)),
        non_2xx=_count(r"Non-2xx or 3xx responses: (\d+)", out),
        socket_errors=_count(r"(?:connect|read|write|timeout) (\d+)", out),
    )
