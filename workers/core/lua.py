"""Lua scripts as files: each package keeps its scripts in `<package>/scripts/<name>.lua`.

They ship as package data (setup.cfg, `[options.package_data]`) and are read on first use,
never at import. Each file starts with what the script promises: its KEYS, its ARGV, what
it writes and what it returns; a builder next to its caller lays out KEYS and ARGV.
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def lua_file(package: str, name: str) -> str:
    """The text of `<package>/scripts/<name>.lua`."""
    return resources.files(package).joinpath("scripts", f"{name}.lua").read_text("utf-8")
