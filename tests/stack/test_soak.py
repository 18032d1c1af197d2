"""The short chaos soak of CI (bin/soak with a fixed seed and a few minutes): the production stack
under mixed faults, checked by what the fakes recorded: no plan lost, booked twice, or written to
Omnitron without the ERP's acceptance, and workers killed while a call they made was held after it
took effect. The long soak is documented in docs/operations.md."""

from __future__ import annotations

import pytest

from devtools.soak import parse_args, report_lines, soak

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("soak")]


def test_a_short_chaos_soak_loses_and_doubles_nothing(tmp_path):
    # An aimed fault can miss (its task ended first, no plan waited): faults go on until one landed.
    args = parse_args(
        ["--minutes", "1.5", "--seed", "11", "--fault-every", "6", "--drain-minutes", "5", "--aimed-kills", "1"]
    )

    result = soak(args)

    report = "\n".join(report_lines(result))
    print(report)
    assert result["violations"] == [], report
    assert result["drained"], f"plans left undelivered once the faults stopped:\n{report}"
    assert sum(result["faults"].values()) >= 8 and result["plans"] > 0, report
    aimed = [kind for kind in result["faults"] if kind.startswith("worker killed ")]
    assert aimed, f"no worker was killed in a window after a side effect:\n{report}"
    assert all(sum(counts.values()) >= 2 for counts in result["runs"].values()), "several scheduled runs per flow"
