"""Every page at a phone's width (375 px) fits without sideways scrolling, for each kind of visitor.

The pages come from the application's URL map (every GET rule without arguments, and those with an id
filled from the demo data), so a page added later is checked too. A page the visitor may not see shows the
error page instead, which has to fit as well."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from sqlalchemy import select

from portal import create_app
from portal.extensions import db
from tests.browser import walk
from tests.browser.conftest import LiveServer, demo_app, sideways_overflow

pytestmark = pytest.mark.browser

VISITORS = {"user": "anna@demo.example", "admin": "admin@demo.example", "helpdesk": "helpdesk@demo.example"}
PASSWORD = "demo-password"
NOT_PAGES = ("/api/", "/webhooks/", "/static/")
# Rules with an id: filled from the demo data when the server is up (see `address`).
WITH_IDS = {"/calendar/activities/<int:activity_id>", "/helpdesk/organizations/<int:organization_id>"}


def _page_rules() -> list[str]:
    app = create_app({"TESTING": True, "SECRET_KEY": "x", "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    rules = set()
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.rule.startswith(NOT_PAGES):
            continue
        if not rule.arguments or rule.rule in WITH_IDS:
            rules.add(rule.rule)
    return sorted(rules)


PAGES = [(who, rule) for rule in _page_rules() for who in VISITORS]
# Pages nobody reaches by a link but everybody meets: the log-in page and the error pages.
OTHER_PAGES = [("anonymous", "/login"), ("anonymous", "/calendar/no-such-page"), ("user", "/no-such-page"),
               ("user", "/calendar/activities/999999")]


@pytest.fixture(scope="module")
def narrow_app(tmp_path_factory):
    # the demo banner shows on every page, as in a demo
    with demo_app(tmp_path_factory.mktemp("narrow"), DEMO_GOOGLE=True) as app:
        yield app


@pytest.fixture(scope="module")
def narrow_server(narrow_app):
    server = LiveServer(narrow_app).start()
    yield server
    server.stop()


def address(app, rule: str) -> str:
    from portal.models import Activity, Organization

    with app.app_context():
        if "<int:activity_id>" in rule:  # Anna's weekly meeting: hers, with a participant and a series
            activity_id = db.session.scalar(select(Activity.id).where(Activity.subject == "Weekly team meeting"))
            return rule.replace("<int:activity_id>", str(activity_id))
        if "<int:organization_id>" in rule:
            return rule.replace("<int:organization_id>", str(db.session.scalar(select(Organization.id))))
    return rule


def log_in(browser, server, who):
    """Logged in as one of the VISITORS; "anonymous" only opens the log-in page."""
    if who == "anonymous":
        browser.get(server.url + "/login")
        return
    walk.log_in(browser, server, VISITORS[who], password=PASSWORD, until=(By.CSS_SELECTOR, "form.whoami"))


@pytest.mark.parametrize("who, rule", PAGES + OTHER_PAGES, ids=[f"{w}:{r}" for w, r in PAGES + OTHER_PAGES])
def test_page_fits_a_phone(browser, phone, narrow_app, narrow_server, shot, who, rule):
    log_in(phone, narrow_server, who)
    phone.get(narrow_server.url + address(narrow_app, rule))
    walk.wait(phone, lambda d: d.execute_script("return document.readyState") == "complete")
    shot(f"{who} {rule} at 375 px")
    assert phone.find_element(By.TAG_NAME, "main").text.strip()  # a page, not a blank or a raw answer
    assert sideways_overflow(phone) == []
