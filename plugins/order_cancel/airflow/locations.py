"""Where a deployment keeps its flow files, as Airflow's configuration tells."""

from __future__ import annotations

from pathlib import Path

from airflow.sdk.configuration import conf

from order_cancel.flows.loading import flows_dir


def flows_folder() -> Path:
    """$ORDER_CANCEL_FLOWS_DIR, else include/flows beside the DAGs folder (an Astro project's layout)."""
    return flows_dir(default=Path(conf.get("core", "dags_folder")).parent / "include" / "flows")
