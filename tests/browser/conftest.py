"""Browser fixtures: the portal served on a local port, driven by Debian's Chromium through ChromeDriver."""

from __future__ import annotations

import os
import re
import shutil
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from portal import create_app
from portal.emulator.server import EmulatorServer
from portal.extensions import db
from portal.sync import runtime
from portal.sync.google import TOKENS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


class LiveServer:
    def __init__(self, app):
        self.app = app
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._thread.join(5)


@contextmanager
def demo_app(folder: Path, **config):
    """A production-like app (CSRF on) with the demo data in a database in `folder`, `config` added."""
    app = create_app({
        "SECRET_KEY": "browser-test",
        "ENCRYPTION_KEY": "hYDDs2tKQ-6jSuX4rrNQNlQhX3DOXVkIOCMUDldOZFc=",
        "SQLALCHEMY_DATABASE_URI": "sqlite:///" + str(folder / "portal.sqlite"),
        "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        **config,
    })
    with app.app_context():
        db.create_all()
    result = app.test_cli_runner().invoke(args=["seed-demo"])
    assert result.exit_code == 0, result.output
    yield app
    # The app runs its own sync scheduler, as in production: stop it with the test, not at the interpreter's
    # exit (where its last tick could no longer hand work to its threads).
    scheduling = runtime.scheduling(app)
    if scheduling is not None:
        scheduling.stop(wait=False)
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def live_app(tmp_path):
    """A production-like app (CSRF on) with the demo data."""
    with demo_app(tmp_path) as app:
        yield app


@pytest.fixture
def live_server(live_app):
    server = LiveServer(live_app).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _driver_session():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("browser tests need Debian's chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver; .ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for CSP reports
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--window-size={WIDE[0]},{WIDE[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def csp_violations(driver) -> list[str]:
    """What the browser refused under the Content-Security-Policy since last asked (reading empties the log)."""
    return [entry["message"] for entry in driver.get_log("browser")
            if "Content Security Policy" in entry["message"]]


WIDE = (1400, 1000)
PHONE_WIDTH = 375

# Screenshots of every walk's steps: CI keeps this folder as the walks' artifact (BROWSER_ARTIFACTS moves it).
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts" / "browser")


@pytest.fixture
def shot(browser, request):
    """`shot("step name")` saves a PNG of the page as it is now, numbered in the order of the walk, in
    tests/artifacts/browser/<test>/; returns its path."""
    folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    taken = []

    def take(name: str) -> Path:
        taken.append(name)
        path = folder / f"{len(taken):02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('-')}.png"
        assert browser.save_screenshot(str(path)), f"no screenshot for {name}"
        return path

    return take


def sideways_overflow(driver) -> list[str]:
    """What sticks out past the right edge of the window (the page scrolls sideways), as short descriptions;
    empty when the page fits its width."""
    return driver.execute_script("""
        const width = document.documentElement.clientWidth, out = [];
        if (document.documentElement.scrollWidth > width + 1) {
          for (const el of document.body.querySelectorAll('*')) {
            const box = el.getBoundingClientRect();
            if (box.width && box.right > width + 1 && getComputedStyle(el).position !== 'fixed') {
              let scrolled = false;
              for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
                const o = getComputedStyle(p).overflowX;
                if (o === 'auto' || o === 'scroll' || o === 'hidden') { scrolled = true; break; }
              }
              if (!scrolled) out.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
                                      (el.className && el.className.baseVal === undefined && el.className ? '.' + String(el.className).split(' ').join('.') : '') +
                                      ' right=' + Math.round(box.right));
            }
          }
          if (!out.length) out.push('document ' + document.documentElement.scrollWidth + ' > ' + width);
        }
        return out.slice(0, 10);
    """)


@pytest.fixture
def phone(browser):
    """The browser at a phone's 375 px width (back to wide afterwards)."""
    browser.set_window_size(PHONE_WIDTH, 800)
    yield browser
    browser.set_window_size(*WIDE)


@pytest.fixture
def browser(_driver_session):
    _driver_session.delete_all_cookies()
    _driver_session.set_window_size(*WIDE)
    csp_violations(_driver_session)
    yield _driver_session
    # Every walk doubles as a check of the policy: a refused script or style would break the page quietly.
    violations = csp_violations(_driver_session)
    _driver_session.delete_all_cookies()
    assert violations == []


@pytest.fixture
def emulated_google(live_app):
    """`emulated_google(allow_http_webhooks=..., **config)` starts an emulated Google and points the portal at
    it (with `config` added to the app's); it stops after the test, and the tokens are forgotten both ways."""
    with ExitStack() as stack:
        def start(*, allow_http_webhooks=False, **config):
            server = stack.enter_context(EmulatorServer(allow_http_webhooks=allow_http_webhooks))
            TOKENS.forget()
            live_app.config.update(GOOGLE_TOKEN_URI=server.token_uri, GOOGLE_API_ENDPOINT=server.api_endpoint,
                                   GOOGLE_BATCH_URI=server.batch_uri, GOOGLE_TIMEOUT=5, **config)
            return server

        yield start
    TOKENS.forget()


def connect_demo(app, server):
    """The demo organization connected to `server` with its demo users, as the demo sets it up."""
    from portal.cli.demo import DEMO_ORGANIZATION, DEMO_USERS
    from portal.sync.demo import connect_demo_organization

    with app.app_context():
        connect_demo_organization(server, DEMO_ORGANIZATION, [email for email, *_ in DEMO_USERS])


@pytest.fixture
def google(emulated_google, live_app):
    """The demo organization connected to an emulated Google that may call the portal's webhooks over http.
    A walk that needs more (someone's sync off) overrides it, building on it."""
    server = emulated_google(allow_http_webhooks=True)
    connect_demo(live_app, server)
    return server
