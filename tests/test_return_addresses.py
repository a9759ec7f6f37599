"""Return addresses (a form's `return_to`, login's `next`) stay on this site, whatever a link or a form brings."""

import html
import re
from urllib.parse import urlsplit

import pytest

from tests.helpers import make_activity

FORM = {
    "subject": "Sprint review", "start_date": "2026-03-02", "start_time": "09:00", "end_date": "2026-03-02",
    "end_time": "10:00", "time_zone": "Europe/Amsterdam",
}

# Each would send the browser elsewhere (or run script) if printed as a link or used as a redirect.
HOSTILE = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "//evil.test",
    "///evil.test",
    "https://evil.test",
    "http:evil.test",
    "/\\evil.test",
    "\\\\evil.test",
    "/\t/evil.test",
    "/\n/evil.test",
    "/\r\n/evil.test",
    " //evil.test",
    "\x00//evil.test",
    "data:text/html,<script>alert(1)</script>",
    "evil.test",
]
# Sent encoded twice: the application sees them encoded once, and must not decode them again.
ENCODED = ["%2F%2Fevil.test", "%2f%5cevil.test", "javascript%3Aalert(1)"]


def same_origin(url: str) -> bool:
    """What a browser would do with the address: only a path on this site passes."""
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in url) or "\\" in url:
        return False
    parts = urlsplit(url)
    return url.startswith("/") and not url.startswith("//") and not parts.scheme and not parts.netloc


def return_addresses(page: str) -> list[str]:
    """Every return address the page prints: the Cancel link and the forms' hidden fields."""
    links = re.findall(r'<a href="([^"]*)">Cancel</a>', page)
    fields = re.findall(r'name="return_to" value="([^"]*)"', page)
    return [html.unescape(value) for value in links + fields]


@pytest.mark.parametrize("hostile", HOSTILE + ENCODED)
def test_new_activity_form_prints_only_a_local_return_address(login_as, hostile):
    page = login_as("user").get("/calendar/activities/new", query_string={"return_to": hostile})
    assert page.status_code == 200
    addresses = return_addresses(page.get_data(as_text=True))
    assert addresses and all(same_origin(a) for a in addresses), addresses
    assert "evil" not in " ".join(addresses) and "javascript" not in " ".join(addresses).lower()


@pytest.mark.parametrize("raw", ["%2F%2Fevil.test", "%2F%5Cevil.test", "%09%2F%2Fevil.test",
                                 "javascript%3Aalert(1)", "https%3A%2F%2Fevil.test"])
def test_percent_encoded_return_address_is_refused(login_as, raw):
    page = login_as("user").get("/calendar/activities/new?return_to=" + raw)
    addresses = return_addresses(page.get_data(as_text=True))
    assert addresses and all(same_origin(a) for a in addresses), addresses


@pytest.mark.parametrize("hostile", HOSTILE)
def test_edit_form_prints_only_a_local_return_address(app, login_as, world, hostile):
    activity_id = make_activity(app, world["user"])
    page = login_as("user").get(f"/calendar/activities/{activity_id}", query_string={"return_to": hostile})
    addresses = return_addresses(page.get_data(as_text=True))
    assert len(addresses) >= 3 and all(same_origin(a) for a in addresses), addresses  # Cancel, save, delete


@pytest.mark.parametrize("hostile", HOSTILE)
def test_invalid_form_page_prints_only_a_local_return_address(login_as, hostile):
    response = login_as("user").post("/calendar/activities", data={**FORM, "end_date": "2026-03-01",
                                                                   "return_to": hostile})
    assert response.status_code == 422
    addresses = return_addresses(response.get_data(as_text=True))
    assert addresses and all(same_origin(a) for a in addresses), addresses


def test_a_local_return_address_is_kept(login_as):
    local = "/calendar/list?page=2"
    page = login_as("user").get("/calendar/activities/new", query_string={"return_to": local})
    assert set(return_addresses(page.get_data(as_text=True))) == {local}
    response = login_as("user").post("/calendar/activities", data={**FORM, "return_to": local})
    assert response.status_code == 302 and response.headers["Location"] == local


@pytest.mark.parametrize("hostile", HOSTILE)
def test_saving_and_deleting_redirect_only_on_site(app, login_as, world, hostile):
    client = login_as("user")
    created = client.post("/calendar/activities", data={**FORM, "return_to": hostile})
    assert created.status_code == 302 and same_origin(created.headers["Location"]), created.headers["Location"]
    activity_id = make_activity(app, world["user"])
    deleted = client.post(f"/calendar/activities/{activity_id}/delete", data={"return_to": hostile})
    assert deleted.status_code == 302 and same_origin(deleted.headers["Location"]), deleted.headers["Location"]


@pytest.mark.parametrize("hostile", HOSTILE + ENCODED)
def test_login_redirects_only_on_site(client, world, hostile):
    response = client.post("/login", query_string={"next": hostile},
                           data={"email": "user@acme.test", "password": "correct-horse-battery"})
    assert response.status_code == 302
    assert same_origin(response.headers["Location"]), response.headers["Location"]
    assert response.headers["Location"] == "/"


def test_login_keeps_a_local_next(client, world):
    response = client.post("/login", query_string={"next": "/profile/calendar-sync"},
                           data={"email": "user@acme.test", "password": "correct-horse-battery"})
    assert response.headers["Location"] == "/profile/calendar-sync"
