"""Every bench, or some: `python bench/run.py --only submit,e2e --size small|full|tiny`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import SIZES
from bench.main import run_benches

ORDER = (
    "submit",
    "e2e",
    "drain",
    "prefetch",
    "status",
    "flower",
    "history",
    "fanout",
    "redis_cost",
    "replica_acks",
    "batch",
)


def benches(names: list[str]) -> dict:
    import importlib

    return {name: importlib.import_module(f"bench.{name}").run for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(ORDER), help=f"comma-separated: {ORDER}")
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ORDER))
    if unknown:
        parser.error(f"unknown bench: {', '.join(unknown)}")
    sys.exit(run_benches(benches(names), args.size, args.keep_logs))


if __name__ == "__main__":
    main()
