"""Every answer carries the headers that keep scripts, frames and referrers in check; over HTTPS, cookies are
Secure and browsers are told to stay on HTTPS."""

import re

import pytest

from tests.helpers import make_activity


def csp(response) -> dict[str, list[str]]:
    policy = response.headers.get("Content-Security-Policy", "")
    directives = (part.split() for part in policy.split(";") if part.strip())
    return {words[0]: words[1:] for words in directives}


@pytest.mark.parametrize("path", ["/login", "/calendar/", "/api/v1/activities", "/no-such-page",
                                  "/static/portal.css"])
def test_every_answer_carries_the_protective_headers(login_as, path):
    response = login_as("user").get(path)
    policy = csp(response)
    assert policy.get("default-src") == ["'self'"]
    assert policy.get("script-src") == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval'
    assert policy.get("style-src") == ["'self'"]
    assert policy.get("frame-ancestors") == ["'none'"]
    assert policy.get("object-src") == ["'none'"] and policy.get("base-uri") == ["'none'"]
    assert policy.get("form-action") == ["'self'"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


def test_plain_http_gets_no_hsts_and_no_secure_cookie(client, world):
    response = client.post("/login", data={"email": "user@acme.test", "password": "correct-horse-battery"})
    assert "Strict-Transport-Security" not in response.headers
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


def test_https_gets_hsts_and_secure_cookies(client, world):
    response = client.post("/login", base_url="https://portal.example",
                           data={"email": "user@acme.test", "password": "correct-horse-battery"})
    assert response.status_code == 302
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    cookies = response.headers.getlist("Set-Cookie")
    assert cookies and all("; Secure" in c and "HttpOnly" in c for c in cookies), cookies


@pytest.fixture
def proxied_app(tmp_path, empty_database):
    """The portal behind one reverse proxy, which ends TLS and says so in X-Forwarded-Proto."""
    from portal.accounts import add_organization, add_user
    from portal.extensions import db
    from tests.conftest import PASSWORD, _test_app

    for app in _test_app(tmp_path, empty_database, WTF_CSRF_ENABLED=False, TRUSTED_PROXIES=1):
        with app.app_context():
            add_user(add_organization("Acme"), "user@acme.test", "Uma User", "user", PASSWORD)
            db.session.commit()
        yield app


def test_behind_a_trusted_proxy_the_forwarded_scheme_counts(proxied_app):
    response = proxied_app.test_client().post("/login", headers={"X-Forwarded-Proto": "https"},
                                              data={"email": "user@acme.test", "password": "correct-horse-battery"})
    assert "Strict-Transport-Security" in response.headers
    assert "; Secure" in response.headers["Set-Cookie"]


def test_without_a_trusted_proxy_a_forwarded_scheme_is_ignored(client, world):
    response = client.post("/login", headers={"X-Forwarded-Proto": "https"},
                           data={"email": "user@acme.test", "password": "correct-horse-battery"})
    assert "Strict-Transport-Security" not in response.headers
    assert "Secure" not in response.headers["Set-Cookie"]


def test_secure_cookies_can_be_forced_by_configuration(app, world):
    app.config["SESSION_COOKIE_SECURE"] = True
    response = app.test_client().post("/login", data={"email": "user@acme.test",
                                                      "password": "correct-horse-battery"})
    assert "; Secure" in response.headers["Set-Cookie"]


TEMPLATES_WITH_INLINE_CODE = re.compile(r"<script(?![^>]*\bsrc=)|\son[a-z]+\s*=|\shx-on|\sstyle\s*=|<style",
                                        re.IGNORECASE)


def test_no_template_holds_inline_script_or_style():
    """The policy forbids them, so the browser would silently drop them."""
    from pathlib import Path

    import portal

    root = Path(portal.__file__).parent / "templates"
    offenders = [f"{path.relative_to(root)}: {match.group(0).strip()}"
                 for path in sorted(root.rglob("*.html"))
                 for match in TEMPLATES_WITH_INLINE_CODE.finditer(path.read_text())]
    assert offenders == []


def test_pages_render_without_inline_style_or_script(app, login_as, world):
    """What the templates print, with data in them (a type's colour in the week and list views)."""
    make_activity(app, world["user"])
    client = login_as("admin")
    for path in ("/calendar/?week=2026-03-02", "/calendar/list", "/profile/calendar-sync",
                 "/settings/integrations/google-calendar"):
        page = client.get(path).get_data(as_text=True)
        assert not TEMPLATES_WITH_INLINE_CODE.search(page), (path, TEMPLATES_WITH_INLINE_CODE.search(page))
