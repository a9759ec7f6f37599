"""`serve` starts the embedded Google emulator only on the explicit demo switch, and only on loopback."""

from __future__ import annotations

import pytest

import portal.cli.demo as demo_cli
from tests.conftest import PASSWORD


@pytest.fixture
def served(app, monkeypatch):
    """Run `serve` without listening: record what it would serve and the config it serves with."""
    seen = {}

    def run_simple(host, port, application, **kwargs):
        seen.update(host=host, port=port, config=dict(application.config))

    monkeypatch.setattr(demo_cli, "run_simple", run_simple)
    app.config.update(SCHEDULER_ENABLED=False, GOOGLE_EMULATOR_STATE="")
    return seen


def test_serve_without_the_demo_switch_starts_no_emulator_even_on_all_interfaces(app, runner, served):
    result = runner.invoke(args=["serve", "--host", "0.0.0.0", "--port", "5999", "--emulator-port", "0"])
    assert result.exit_code == 0, result.output
    assert served["host"] == "0.0.0.0"
    # Unset means real Google: nothing may point the portal at an emulator.
    assert not served["config"].get("GOOGLE_API_ENDPOINT")
    assert not served["config"].get("GOOGLE_TOKEN_URI")
    assert not served["config"].get("DEMO_GOOGLE")
    assert "Emulated Google" not in result.output


def test_the_demo_switch_starts_the_emulator_on_loopback_whatever_the_portals_host(app, runner, served):
    result = runner.invoke(args=["serve", "--demo", "--host", "0.0.0.0", "--port", "5999",
                                 "--emulator-port", "0"])
    assert result.exit_code == 0, result.output
    assert served["host"] == "0.0.0.0"
    assert served["config"]["GOOGLE_API_ENDPOINT"].startswith("http://127.0.0.1:")
    assert served["config"]["GOOGLE_TOKEN_URI"].startswith("http://127.0.0.1:")
    assert served["config"]["DEMO_GOOGLE"] is True
    # The emulator posts its notifications to the portal over loopback, not to 0.0.0.0.
    assert served["config"]["PUBLIC_BASE_URL"] == "http://127.0.0.1:5999"


def test_the_demo_setting_works_like_the_switch(app, runner, served):
    app.config["DEMO_GOOGLE"] = True
    result = runner.invoke(args=["serve", "--host", "0.0.0.0", "--port", "5999", "--emulator-port", "0"])
    assert result.exit_code == 0, result.output
    assert served["config"]["GOOGLE_API_ENDPOINT"].startswith("http://127.0.0.1:")


def test_the_demo_switch_refuses_a_configured_google(app, runner, served):
    app.config["GOOGLE_API_ENDPOINT"] = "https://www.googleapis.com"
    result = runner.invoke(args=["serve", "--demo", "--emulator-port", "0"])
    assert result.exit_code != 0
    assert "GOOGLE_API_ENDPOINT" in result.output
    assert not served


def test_pages_say_demo_only_where_the_emulator_is_on(app, client, world):
    client.post("/login", data={"email": "user@acme.test", "password": PASSWORD})
    assert "demo-banner" not in client.get("/calendar/").get_data(as_text=True)
    assert "demo-banner" not in client.get("/login").get_data(as_text=True)
    app.config["DEMO_GOOGLE"] = True
    page = client.get("/calendar/").get_data(as_text=True)
    assert "demo-banner" in page and "emulated Google" in page
    client.post("/logout")
    assert "demo-banner" in client.get("/login").get_data(as_text=True)


def test_make_run_uses_the_demo_switch():
    from portal import PROJECT_ROOT

    makefile = (PROJECT_ROOT / "Makefile").read_text()
    run_target = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "serve --demo" in run_target
