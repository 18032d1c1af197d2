"""The Astro project files stay consistent with the code: the Runtime image carries the Airflow the
tests run with, both copies of the astro CLI settings agree, airflow_settings.yaml defines every
connection and pool the example flows name, and .dockerignore leaves what the image needs in the context."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]


def test_runtime_image_ships_the_airflow_the_tests_use():
    import airflow

    dockerfile = (ROOT / "Dockerfile").read_text()
    image = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    runtime, airflow_version = re.search(r"Astro Runtime (\S+) ships Apache Airflow (\S+) ", dockerfile).groups()
    pinned = re.search(r"^apache-airflow==(\S+)", (ROOT / "requirements-dev.txt").read_text(), re.M).group(1)
    assert image.startswith(f"astrocrpublic.azurecr.io/runtime:{runtime}-python-") or image == (
        f"astrocrpublic.azurecr.io/runtime:{runtime}"
    )
    assert airflow_version == pinned == airflow.__version__


def test_astro_cli_settings_agree():
    documented = yaml.safe_load((ROOT / "astro-config.yaml").read_text())
    used = yaml.safe_load((ROOT / ".astro" / "config.yaml").read_text())
    assert documented == used
    assert used["project"]["name"]


def test_airflow_settings_define_the_connections_of_the_example_flows():
    settings = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())["airflow"]
    defined = {connection["conn_id"] for connection in settings["connections"]}
    pools = {pool["pool_name"] for pool in settings["pools"]}
    needed, needed_pools = set(), set()
    for path in (ROOT / "include" / "flows").glob("*.y*ml"):
        flow = yaml.safe_load(path.read_text())
        needed |= {flow["omnitron"]["conn_id"], flow["erp"]["conn_id"]}
        needed_pools |= {flow["erp"]["pool"]} if flow["erp"].get("pool") else set()
    assert needed <= defined
    assert needed_pools <= pools
    for connection in settings["connections"]:
        assert connection["conn_type"] == "http" and connection["conn_host"].startswith("https://")
    assert all(pool["pool_name"] and pool["pool_slot"] >= 1 for pool in settings["pools"])


def test_dockerignore_keeps_what_the_image_needs():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    # tests/ (with fakes/ and devtools/, which tests/conftest.py imports) stays in for `astro dev pytest`.
    assert not ignored & {
        "dags",
        "plugins",
        "include",
        "requirements.txt",
        "packages.txt",
        ".astro",
        "tests",
        "fakes",
        "devtools",
    }
    assert {".venv", ".airflow", ".git"} <= ignored
