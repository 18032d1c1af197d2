"""Preflight: before a flow's first run against a real Omnitron, check in seconds, and without
writing anything anywhere, each assumption the flow makes (docs/before-the-first-run.md).

Much of Omnitron's side is assumed (shared/reference/omnitron-api.md, "Evidence review"): an
assumption that does not hold must show here, not as lost refunds in production. The only
requests that are not reads are the logins. `python -m order_cancel preflight FLOW_ID` prints the
findings as a table.
"""

from __future__ import annotations

from order_cancel.clients.erp import ErpClient
from order_cancel.clients.omnitron import OmnitronClient, OmnitronError
from order_cancel.flows.models import FlowConfig
from order_cancel.preflight import flow as flow_checks
from order_cancel.preflight import omnitron as omnitron_checks
from order_cancel.preflight.findings import Finding, Verdict, unchecked

# The plans the script and mapping are tried on, and the plans (and transactions) read for the
# filter and field checks.
DEFAULT_PLANS, SAMPLE_SIZE = 5, 100


def preflight(
    flow: FlowConfig, omnitron: OmnitronClient, erp: ErpClient, *, plans: int = DEFAULT_PLANS
) -> list[Finding]:
    """Each assumption of the flow, in the order the flow relies on them."""
    findings = [omnitron_checks.login(omnitron)]
    sample = omnitron_checks.Sample([], [], OmnitronError("no Omnitron login"))
    if findings[0].verdict is Verdict.HOLDS:
        sample = omnitron_checks.take_sample(omnitron, flow, max(plans, SAMPLE_SIZE))
        findings += omnitron_checks.omnitron_findings(omnitron, flow, sample)
    else:
        findings.append(unchecked("the other Omnitron assumptions", "nothing can be read without a login"))
    pipeline, why_not = flow_checks.build(flow)
    findings.append(flow_checks.transform(flow, pipeline, why_not, sample, plans))
    erp_findings = (flow_checks.erp_login(flow, erp), flow_checks.query_check(flow, pipeline, erp))
    return findings + [finding for finding in erp_findings if finding is not None]
