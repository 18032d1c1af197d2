"""What a preflight check found: one assumption of the flow, its verdict, and the evidence."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from order_cancel.clients.omnitron import OmnitronAnswerError, OmnitronError

# Over this many characters an evidence is cut: one table line per assumption.
EVIDENCE_LIMIT = 300


class Verdict(StrEnum):
    HOLDS = "holds"
    BROKEN = "broken"
    UNCHECKED = "could not check"


@dataclass(frozen=True)
class Finding:
    assumption: str
    verdict: Verdict
    evidence: str


def holds(assumption: str, evidence: str) -> Finding:
    return Finding(assumption, Verdict.HOLDS, evidence)


def broken(assumption: str, evidence: str) -> Finding:
    return Finding(assumption, Verdict.BROKEN, evidence)


def unchecked(assumption: str, evidence: str) -> Finding:
    return Finding(assumption, Verdict.UNCHECKED, evidence)


def failed_call(assumption: str, exc: OmnitronError) -> Finding:
    """A call that failed: an answer the flow cannot read, or a refusal (4xx), breaks the assumption;
    no answer, or a 5xx, leaves it unchecked."""
    refused = exc.status_code is not None and 400 <= exc.status_code < 500
    return Finding(
        assumption, Verdict.BROKEN if refused or isinstance(exc, OmnitronAnswerError) else Verdict.UNCHECKED, str(exc)
    )


def table(findings: Sequence[Finding]) -> list[str]:
    """`assumption | verdict | evidence`, one line each, the first two columns aligned."""
    rows = [("assumption", "verdict", "evidence")] + [
        (finding.assumption, finding.verdict.value, _one_line(finding.evidence)) for finding in findings
    ]
    widths = [max(len(row[column]) for row in rows) for column in (0, 1)]
    return [f"{row[0].ljust(widths[0])} | {row[1].ljust(widths[1])} | {row[2]}" for row in rows]


def tally(findings: Sequence[Finding]) -> str:
    counts = Counter(finding.verdict for finding in findings)
    return ", ".join(f"{counts[verdict]} {verdict.value}" for verdict in Verdict)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EVIDENCE_LIMIT else text[: EVIDENCE_LIMIT - 1] + "…"
