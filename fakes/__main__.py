"""Run both fakes in the foreground with demo data: ``python -m fakes --help``.

For the local Airflow demo and for tests that drive the fakes from another process through the
``/_fake/`` control API (requests, plans, faults, responses, expire_tokens, latency).
"""

from __future__ import annotations

import argparse
import signal
import threading

from . import DEMO_ERP_PORT, DEMO_OMNITRON_PORT
from .data import demo_dataset
from .erp import AUTH_MODES, FakeErp
from .omnitron import FakeOmnitron


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fakes", description=__doc__.splitlines()[0])
    parser.add_argument("--omnitron-port", type=int, default=DEMO_OMNITRON_PORT, help=f"default {DEMO_OMNITRON_PORT}")
    parser.add_argument("--erp-port", type=int, default=DEMO_ERP_PORT, help=f"default {DEMO_ERP_PORT}")
    parser.add_argument("--plans", type=int, default=12, help="how many demo cancellation plans")
    parser.add_argument("--erp-auth", choices=AUTH_MODES, default="none")
    parser.add_argument("--erp-latency-ms", type=float, default=0.0, help="hold every ERP answer this long (default 0)")
    parser.add_argument("--log-requests", action="store_true", help="log each request to stderr")
    return parser.parse_args(argv)


def describe(omnitron: FakeOmnitron, erp: FakeErp) -> str:
    """What a person needs to configure Airflow connections against the fakes."""
    user, password = next(iter(omnitron.users.items()))
    erp_auth = {
        "none": "no auth",
        "token": f"token login POST {erp.login_path} as {erp.username} / {erp.password}",
        "basic": f"basic auth {erp.username} / {erp.password}",
        "header": f"static token {erp.static_token!r} in {erp.header_name}",
    }[erp.auth]
    return "\n".join(
        [
            f"Fake Omnitron: {omnitron.url}  login {user} / {password}  "
            f"({len(omnitron.plans)} plans, {len(omnitron.order_transactions)} order transactions)",
            f"Fake ERP:      {erp.url}  {erp_auth}, answers after {erp.latency_s * 1000:g} ms",
            "Control API:   GET <url>/_fake/requests, POST <url>/_fake/faults, ... ; Ctrl-C stops",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plans, transactions = demo_dataset(args.plans)
    omnitron = FakeOmnitron(port=args.omnitron_port, log_requests=args.log_requests)
    erp = FakeErp(
        auth=args.erp_auth, port=args.erp_port, log_requests=args.log_requests, latency_ms=args.erp_latency_ms
    )
    omnitron.add_plans(plans)
    omnitron.add_order_transactions(transactions)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with omnitron, erp:
        print(describe(omnitron, erp), flush=True)
        while not stop.wait(0.5):
            pass
    print("Fakes stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
