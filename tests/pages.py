"""The package's pages (the test panels and the plans page) mounted as Airflow's api-server mounts
them, with Airflow's SimpleAuthManager and its users, in process (the same apps in a running
api-server and a browser: tests/browser/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PANELS = "/order-cancel-panels"
PLANS = "/order-cancel-plans"


def pages_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, users: list[str], flows_dir: Path):
    """A TestClient of both apps; `users` as `[core] simple_auth_manager_users` names them
    ("name:role" or, in multi-team mode, "name:role:team_a|team_b"), each with a bearer token in
    `client.tokens[name]`."""
    import order_cancel_panels
    from airflow.api_fastapi import app as api_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    fields = [user.split(":") for user in users]
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({name: name for name, *_ in fields}))
    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER", "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    )
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", ",".join(users))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "panels-test-" + "s" * 64)
    monkeypatch.setenv("ORDER_CANCEL_FLOWS_DIR", str(flows_dir))
    monkeypatch.setattr(api_app._AuthManagerState, "instance", None)
    auth_manager = api_app.create_auth_manager()
    auth_manager.init()

    root = FastAPI()
    # Apps of their own (not the plugin's instances, built once): each test has its own auth manager.
    for app in order_cancel_panels.OrderCancelPanelsPlugin.fastapi_apps:
        root.mount(app["url_prefix"], order_cancel_panels._AppOnFirstRequest(app["app"]._module))
    client = TestClient(root)
    client.tokens = {  # type: ignore[attr-defined]
        name: auth_manager.generate_jwt(
            SimpleAuthManagerUser(username=name, role=role, teams=teams[0].split("|") if teams else None)
        )
        for name, role, *teams in fields
    }
    return client


def bearer(client, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.tokens[user]}"}
