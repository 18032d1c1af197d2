"""The clients' HTTP session reads proxy and CA settings from the environment once per host, and
still honours them (a proxy on 127.0.0.1 stands in for a corporate proxy)."""

from __future__ import annotations

import requests

from order_cancel.clients.http import HttpSession
from order_cancel.clients.omnitron import OmnitronClient
from tests.conftest import OMNITRON_PASSWORD, OMNITRON_USER


def test_a_proxy_from_the_environment_carries_the_omnitron_calls(omnitron, monkeypatch):
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", omnitron.url)  # the fake answers what a proxy forwards
    client = OmnitronClient("http://omnitron.example/", OMNITRON_USER, OMNITRON_PASSWORD, timeout=5)

    client.login()
    client.login()

    hosts = [r.headers.get("Host") for r in omnitron.requests if r.path == "/api/v1/auth/login/"]
    assert hosts == ["omnitron.example", "omnitron.example"]


def test_no_proxy_and_the_ca_bundle_are_honoured_as_by_requests(monkeypatch, tmp_path):
    bundle = tmp_path / "ca.pem"
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "erp.internal")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    for url in ("https://erp.internal/api/cancellations", "https://omnitron.example/api/v1/"):
        ours = HttpSession().merge_environment_settings(url, {}, None, True, None)
        assert ours == requests.Session().merge_environment_settings(url, {}, None, True, None)
    assert HttpSession().merge_environment_settings("https://erp.internal/x", {}, None, True, None)["verify"] == str(
        bundle
    )


def test_the_environment_is_read_once_per_host(monkeypatch):
    reads = []
    plain = requests.Session.merge_environment_settings
    monkeypatch.setattr(
        requests.Session, "merge_environment_settings", lambda self, *args: reads.append(args[0]) or plain(self, *args)
    )
    session = HttpSession()

    for path in ("a", "b", "c"):
        session.merge_environment_settings(f"https://omnitron.example/{path}", {}, None, True, None)
    session.merge_environment_settings("https://erp.example/a", {}, None, True, None)

    assert reads == ["https://omnitron.example/a", "https://erp.example/a"]
