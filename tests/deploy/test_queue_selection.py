"""WORKER_QUEUES: the queues of a worker started without -Q."""

from __future__ import annotations

import pytest

from workers.core.settings import SettingsError, load_settings
from workers.runtime.queue_selection import queues_given


@pytest.mark.parametrize(
    ("argv", "given"),
    [
        (["-A", "workers.celery_app", "worker", "-E"], False),
        (["worker", "-Q", "default"], True),
        (["worker", "-Qdefault"], True),
        (["worker", "--queues=default"], True),
    ],
)
def test_a_command_line_with_queues_wins_over_the_setting(argv: list[str], given: bool) -> None:
    assert queues_given(argv) is given


def test_worker_queues_accepts_known_queues_and_refuses_others_in_one_line() -> None:
    assert load_settings(worker_queues=" default, ai_high_priority ").worker_queues == (
        "default,ai_high_priority"
    )
    with pytest.raises(SettingsError, match=r"^invalid setting WORKER_QUEUES: .*'gpu'"):
        load_settings(worker_queues="default,gpu")
