"""`make run` only: run the worker, and start it again when it stops on request.

A shutdown from the dashboard or the API makes a worker exit 0; under honcho one process
ending ends them all, so one click would stop the whole platform. Here the worker is
started again (and says so); a crash (any other exit) still ends `make run`, where it is
seen. In production (the Procfile as it is, Compose, Kubernetes) the platform's own
restart policy decides.

    python -m workers.dev.keep_running celery -A workers.celery_app worker ...
"""

from __future__ import annotations

import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def interrupted(_signum: int, _frame: object) -> None:
        # Ctrl-C reaches the worker itself (one process group): a second SIGINT from
        # here would turn its warm shutdown into a cold one.
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, forward)  # honcho stops its processes with SIGTERM
    signal.signal(signal.SIGINT, interrupted)
    while True:
        child = subprocess.Popen(argv)
        code = child.wait()
        if stopping or code != 0:
            return code
        print(
            "devstack: the worker stopped on request (a shutdown from the dashboard or the "
            "API); make run starts it again",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
