"""The documentation site: its flow-file reference is the models', and it builds strictly (a dead
link, a missing anchor or a page left out of the navigation fails)."""

from __future__ import annotations

import subprocess
import sys

from devtools.airflow_env import ROOT
from devtools.flow_reference import PAGE, render


def test_the_flow_file_reference_is_generated_from_the_models():
    assert PAGE.read_text(encoding="utf-8") == render(), "regenerate it: python -m devtools.flow_reference"


def test_the_site_builds_strictly(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "flow-file" / "index.html").exists()
