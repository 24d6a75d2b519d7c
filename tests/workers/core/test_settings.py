"""Settings: read from the environment, a bad value stops start-up with one clear line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from workers.core.settings import SettingsError, load_settings, redact_url


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "abc"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"REDIS_URL": "http://localhost:6379"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://localhost:port/0"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://localhost:6379/zero"}, "REDIS_URL"),
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY"),
        ({"TASK_TIME_LIMIT": "-1"}, "TASK_TIME_LIMIT"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, env, variable) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"invalid setting {variable}:")
    assert "\n" not in message


@pytest.mark.parametrize("command", [["-m", "service"], ["-m", "workers.dev.flower"]])
def test_start_up_with_a_bad_value_prints_one_line_and_exits(command: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, *command],
        env={"PATH": "/usr/bin:/bin", "PORT": "abc", "REDIS_URL": "redis://127.0.0.1:1/0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip() == (
        "invalid setting PORT: Input should be a valid integer, "
        "unable to parse string as an integer"
    )


def test_celery_worker_with_a_bad_redis_url_exits_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "inspect", "ping"],
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": "mysql://db/1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "invalid setting REDIS_URL" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_values_come_from_the_environment_and_dotenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    (tmp_path / ".env").write_text("PORT=9123\nOPENAI_MODEL=from-dotenv\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_MODEL", "from-env")
    settings = load_settings()
    assert settings.port == 9123
    assert settings.openai_model == "from-env"  # the environment wins over .env


def test_secrets_are_redacted_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2-redis@redis.example:6379/0")
    monkeypatch.setenv("FLOWER_PASSWORD", "hunter2-flower")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-hunter2")
    monkeypatch.setenv("API_KEYS", "tok-hunter2:alice:user")
    text = repr(load_settings())
    assert "hunter2" not in text
    assert "redis.example" in text


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("redis://:pw@h:6379/1") == "redis://:***@h:6379/1"
    assert redact_url("redis://u:pw@h/1") == "redis://u:***@h/1"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


def test_the_worker_heap_is_frozen_once_before_the_first_fork(monkeypatch) -> None:
    """Celery collects garbage before every fork; the imported heap is frozen first."""
    import gc

    from workers.runtime import signals

    monkeypatch.setattr(signals, "_heap_frozen", False)
    try:
        signals._freeze_heap_once()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000
        signals._freeze_heap_once()
        # Once only: later garbage stays collectable. (The count may drop: a frozen object
        # another thread lets go of meanwhile is freed all the same.)
        assert gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()
