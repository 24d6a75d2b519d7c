"""Command-line entry points: one bench (`python -m bench.<name>`) or all (`bench/run.py`)."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

from bench.common import SIZES, Row, Stack, table

BenchFn = Callable[[Stack, str], list[Row]]


def machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return (
        f"machine: {os.cpu_count()} CPUs ({model}), {mem} RAM, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )


def run_benches(benches: dict[str, BenchFn], size: str, keep_logs: bool = False) -> int:
    print(machine(), flush=True)
    print(f"size: {size}", flush=True)
    rows: list[Row] = []
    failed = []
    with Stack(keep_logs=keep_logs) as stack:
        for name, fn in benches.items():
            start = time.monotonic()
            try:
                got = fn(stack, size)
            except Exception as exc:  # one broken bench does not hide the others
                failed.append(name)
                print(f"[{name}] FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                if keep_logs:
                    print(f"logs in {stack.dir}", file=sys.stderr)
                continue
            finally:
                stack.flush()
            rows += got
            print(f"[{name}] done in {time.monotonic() - start:.1f} s", flush=True)
            print(table(got), flush=True)
    print("\nRESULTS", flush=True)
    print(table(rows), flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


def cli(fn: BenchFn) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    name = fn.__module__.rsplit(".", 1)[-1]
    sys.exit(run_benches({name: fn}, args.size, args.keep_logs))
