"""Every Lua script is a file the installed package ships (the image installs a wheel) and
`lua_file` reads, and each starts by saying what it takes (KEYS) and returns."""

from __future__ import annotations

import configparser
import fnmatch
import itertools
from pathlib import Path

import pytest

from workers.core.lua import lua_file

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS = sorted((ROOT / "workers").glob("**/scripts/*.lua"))


def shipped_patterns(package: str) -> list[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    data = config["options.package_data"]
    return [p.strip() for key in ("*", package) if key in data for p in data[key].split(",")]


def test_the_scripts_are_found() -> None:
    assert len(SCRIPTS) >= 15


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_script_ships_as_package_data_and_states_its_keys(path: Path) -> None:
    package_dir = path.parent.parent
    assert (package_dir / "__init__.py").exists()
    package = ".".join(package_dir.relative_to(ROOT).parts)
    relative = f"scripts/{path.name}"
    assert any(fnmatch.fnmatch(relative, p) for p in shipped_patterns(package)), relative
    leading = itertools.takewhile(
        lambda line: line.startswith("--"), lua_file(package, path.stem).splitlines()
    )
    assert any(line.startswith("-- KEYS:") for line in leading)
