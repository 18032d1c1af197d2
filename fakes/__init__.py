"""Fake Omnitron and fake ERP HTTP servers for end-to-end tests and the local demo.

Stdlib only; they bind 127.0.0.1. In a test::

    with FakeOmnitron() as omnitron, FakeErp(auth="token") as erp:
        omnitron.add_plans([make_plan(1)])
        ...  # point the flow at omnitron.url and erp.url

As a separate process: ``python -m fakes --help`` (driven through the ``/_fake/`` control API).
"""

from .data import demo_dataset, make_order_transaction, make_plan
from .erp import FakeErp
from .messages import RecordedRequest, Reply
from .omnitron import FakeOmnitron

# Where the demo, the local stacks and `python -m fakes` listen, and what the example flows and the
# README name (the crm_url attribute of include/flows/acme_waiting_cancellations.yaml).
DEMO_OMNITRON_PORT, DEMO_ERP_PORT = 18081, 18082

__all__ = [
    "DEMO_ERP_PORT",
    "DEMO_OMNITRON_PORT",
    "FakeErp",
    "FakeOmnitron",
    "RecordedRequest",
    "Reply",
    "demo_dataset",
    "make_order_transaction",
    "make_plan",
]
