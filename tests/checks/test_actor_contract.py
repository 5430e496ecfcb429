"""The actor contract over every actor a real kernel runs (entry points included), through the checks
ml-processing ships (`ml_processing.checks.actors`): every op declared (arguments, reply, role, doc), and
on a running kernel every op answers garbage arguments without ``internal`` and without a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_processing import checks
from ml_processing.core.actor import Actor
from tests.support.kernels import running
from tests.support.registries import FOUND


def test_the_kernel_runs_the_builtin_services() -> None:
    assert {"kernel", "indicators", "features", "models", "patterns", "sentiment"} <= set(FOUND.actors)


@pytest.mark.parametrize("actor", checks.pytest_cases(FOUND, "actors"))
def test_every_op_is_declared(actor: type[Actor]) -> None:
    checks.actors.check_actor_declarations(actor)


@pytest.mark.parametrize("service", sorted(FOUND.actors))
async def test_every_op_answers_garbage_without_failing(service: str, tmp_path: Path) -> None:
    async with running(checks.local_config(tmp_path)) as kernel:
        await checks.actors.check_actor_answers(kernel, service)
