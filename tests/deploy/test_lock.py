"""setup.cfg, requirements.lock and the Dockerfile agree: the image gets the tested versions."""

from __future__ import annotations

import configparser

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.processes import ROOT
from workers.runtime.internals import TESTED_RELEASES


def install_requires() -> dict[str, Requirement]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    requirements = [Requirement(line) for line in lines if line and not line.startswith("#")]
    return {canonicalize_name(r.name): r for r in requirements}


def locked() -> dict[str, Version]:
    pins = [
        line.split("==")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    ]
    return {canonicalize_name(name): Version(version) for name, version in pins}


def test_every_runtime_dependency_is_locked_at_a_version_setup_cfg_allows() -> None:
    lock = locked()
    for name, requirement in install_requires().items():
        assert name in lock, f"{name} is not in requirements.lock"
        assert requirement.specifier.contains(lock[name]), f"{name}=={lock[name]}: {requirement}"


def test_celery_and_kombu_are_pinned_to_the_tested_minor_release() -> None:
    requirements, lock = install_requires(), locked()
    for package, (major, minor) in TESTED_RELEASES.items():
        specifiers = {str(s) for s in requirements[package].specifier}
        assert specifiers == {f">={major}.{minor}.0", f"<{major}.{minor + 1}"}, package
        assert lock[package].release[:2] == (major, minor), package


def test_the_image_installs_the_locked_versions_and_nothing_else() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY requirements.lock " in dockerfile
    wheel = next(line for line in dockerfile.splitlines() if "pip wheel" in line)
    assert "--constraint requirements.lock" in wheel
    install = next(line for line in dockerfile.splitlines() if "pip install" in line)
    assert "--no-index" in install, "the image installs the wheels built from the lock only"
    assert "!requirements.lock" in (ROOT / ".dockerignore").read_text().splitlines()
