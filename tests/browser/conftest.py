"""Browser tests: Debian's Chromium (/usr/bin/chromium, `devtools/ensure_chromium.sh`) driven by
Playwright for Python, against one local Airflow (`devtools.local_airflow`, as `bin/airflow-local`
runs it) shared by the tests of this folder.

Nothing here is skipped: without Playwright or Chromium the browser tests fail and say what to
install. The stack runs on free ports with --manual-only and a copy of the example flows in which

* `retries` is 0, so a failed step fails at once (no 30 s retry delays), and
* the CRM URL of acme_waiting_cancellations' post script names this stack's fake ERP (the example
  names 127.0.0.1:18082, the demo port, which a developer's own bin/airflow-local may hold).

Screenshots go to artifacts/browser/ (gitignored): one per step, and FAILED-<test>.png for a failed test.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from devtools.airflow_env import ROOT
from tests.e2e.test_local_airflow import LocalStack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "artifacts" / "browser"
EXAMPLE_FLOWS = ROOT / "include" / "flows"
VIEWPORT = {"width": 1400, "height": 900}


class UiStack(LocalStack):
    """tests/e2e/test_local_airflow.py's stack, with a flows folder of its own (--flows-dir)."""

    def __init__(self, home: Path, flows_dir: Path):
        super().__init__(home, flows_dir)
        self.omnitron = f"http://127.0.0.1:{self.omnitron_port}"
        self.erp = f"http://127.0.0.1:{self.erp_port}"

    def fake(self, method: str, url: str, **kwargs):
        """The fakes' control API (/_fake/...)."""
        response = self.http.request(method, url, timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()


def copy_flows(target: Path, erp_url: str) -> Path:
    shutil.copytree(EXAMPLE_FLOWS, target)
    for path in target.glob("*.yaml"):
        flow = yaml.safe_load(path.read_text(encoding="utf-8"))
        flow["retries"] = 0
        if "crm_url" in flow.get("attributes", {}):
            flow["attributes"]["crm_url"] = f"{erp_url}/api/crm/notify"
        path.write_text(yaml.safe_dump(flow, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return target


@pytest.fixture(scope="package")
def ui_stack(tmp_path_factory):
    """A running local Airflow with the fakes, for the tests of this folder; stopped (and every process
    of it gone) after the last of them, so that it does not slow the rest of the suite."""
    base = tmp_path_factory.mktemp("browser-airflow")
    stack = UiStack(base / "airflow-home", base / "flows")
    copy_flows(stack.flows_dir, stack.erp)
    try:
        stack.start()
        stack.wait_ready()
        stack.login()  # a REST token for the test's own checks (the browser logs in through the form)
        for dag_id in ("acme_confirmed_refunds", "acme_waiting_cancellations"):
            stack.wait_for_dag(dag_id)
        yield stack
    finally:
        code = stack.stop()
        stack.force_cleanup()
        if code not in (0, None):
            print(f"airflow-local exited with {code}:\n{stack.log()[-3000:]}", file=sys.stderr)


@pytest.fixture(scope="package")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS


@pytest.fixture(scope="package")
def browser():
    """Chromium from Debian through Playwright; never `playwright install`."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        missing = str(exc)
    else:
        missing = None
    if missing:
        pytest.fail(
            f"the browser tests need Playwright for Python ({missing}): .venv/bin/pip install -r "
            "requirements-dev.txt (playwright is pinned there; never `playwright install`)",
            pytrace=False,
        )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM}: run devtools/ensure_chromium.sh "
            "(apt-get install chromium)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def pytest_collection_modifyitems(items):
    """The browser tests start a stack (package fixtures, shared: on one xdist worker)."""
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.stack)
            item.add_marker(pytest.mark.xdist_group("browser"))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.browser_test_failed = report.failed
    return report


@pytest.fixture
def page(request, browser, artifacts):
    """A fresh browser context (no cookies) and page; a screenshot of it when the test fails."""
    context = browser.new_context(viewport=VIEWPORT, locale="en-US", timezone_id="UTC")
    context.set_default_timeout(20_000)
    page = context.new_page()
    try:
        yield page
    finally:
        if getattr(request.node, "browser_test_failed", False):
            try:
                page.screenshot(path=str(artifacts / f"FAILED-{request.node.name}.png"), full_page=True)
            except Exception as exc:
                print(f"no failure screenshot: {exc}", file=sys.stderr)
        context.close()


class Shots:
    """Numbered screenshots of one test: artifacts/browser/<test>-<nn>-<step>.png."""

    def __init__(self, folder: Path, prefix: str):
        self.folder, self.prefix, self.count = folder, prefix, 0

    def __call__(self, page, step: str, *, full_page: bool = False) -> Path:
        self.count += 1
        path = self.folder / f"{self.prefix}-{self.count:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=full_page, animations="disabled")
        return path


def pytest_configure(config):
    config.addinivalue_line("markers", "shots(prefix): file name prefix of a browser test's screenshots")


@pytest.fixture
def shot(request, artifacts) -> Shots:
    marker = request.node.get_closest_marker("shots")
    return Shots(artifacts, marker.args[0] if marker else request.node.name.removeprefix("test_")[:30])
