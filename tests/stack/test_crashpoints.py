"""The crash-point matrix of CI (`bin/crashpoints`, devtools/crashpoints.py, on a subset): a task
process SIGKILLed at a dangerous moment, as a lost worker, on a real LocalExecutor stack; Airflow's
retry may neither write Omnitron twice nor send the ERP again what it already decided.

One point per layout, on one shared stack: per step, the ERP's answer held; one task per plan, after
Omnitron's answer (the task kept at its ledger write); batches, the middle of the Omnitron phase.
The whole matrix is `bin/crashpoints`.
"""

from __future__ import annotations

import pytest

from devtools.crashpoints import AFTER_OMNITRON, ERP_HELD, OMNITRON_HELD, CrashPoints

# The tests share one stack (a module fixture): on one xdist worker.
pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("crashpoints")]

CI_POINTS = [("per_step", ERP_HELD), ("single", AFTER_OMNITRON), ("batch", OMNITRON_HELD)]


@pytest.fixture(scope="module")
def crash_points(tmp_path_factory):
    harness = CrashPoints(
        tmp_path_factory.mktemp("crashpoints"), list(dict.fromkeys(layout for layout, _ in CI_POINTS))
    )
    with harness:
        yield harness
    assert harness.left == [], f"processes of the stack still alive after its stop: {harness.left}"


@pytest.mark.parametrize(("layout", "point"), CI_POINTS, ids=[f"{layout}-{point}" for layout, point in CI_POINTS])
def test_a_task_killed_at_a_crash_point_is_retried_without_writing_anything_twice(crash_points, layout, point):
    result = crash_points.run_point(layout, point)

    print(f"\n{' | '.join(result.row)} ({result.seconds:.0f} s)")
    assert result.verdict == "ok", f"{layout} | {point} | {result.verdict} | {result.evidence}"
