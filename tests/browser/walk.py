"""What the browser walks do again and again: wait for the page, log in (by mouse or keyboard alone), type into
whatever has the focus, read the focused element, Tab to an element, read a switch."""

from __future__ import annotations

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

PASSWORD = "demo-password"  # every demo user's
WEEK_GRID = (By.ID, "week-grid")  # a user's landing page after logging in: the calendar's week


LOGGED_IN = (By.CSS_SELECTOR, "form.whoami")  # on every page once someone is logged in


def wait(browser, condition, timeout=10):
    # htmx replaces what a condition may be reading at that moment: a stale element means "look again".
    return WebDriverWait(browser, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def log_in(browser, server, email, *, password=PASSWORD, until=LOGGED_IN, enter=False, timeout=10):
    """Fill in the log-in form and send it with its button (with `enter`, by Enter in the password field
    instead), then wait for `until` on the next page: a locator such as (By.ID, "week-grid"), by default the
    logged-in top bar, so the next step never races the log-in."""
    browser.get(server.url + "/login")
    browser.find_element(By.NAME, "email").send_keys(email)
    if enter:
        browser.find_element(By.NAME, "password").send_keys(password + Keys.ENTER)
    else:
        browser.find_element(By.NAME, "password").send_keys(password)
        browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait(browser, EC.presence_of_element_located(until), timeout)


def keys(browser, *typed):
    """Typing, as a person at a keyboard does: into whatever has the focus."""
    ActionChains(browser).send_keys(*typed).perform()


def shift_tab(browser):
    ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()


def focused(browser) -> dict:
    """The focused element, read in one step: tag, name, id, value, type, text and the id of its form."""
    return browser.execute_script("""
        const el = document.activeElement;
        return {tag: el.tagName.toLowerCase(), name: el.name || '', id: el.id || '', value: el.value || '',
                type: el.type || '', text: (el.textContent || '').trim(), form: el.form ? el.form.id : ''};
    """)


def log_in_by_keyboard(browser, server, email, *, password=PASSWORD, until=WEEK_GRID):
    """Log in by keyboard alone: the page puts the cursor in the e-mail field, Tab goes on to the password,
    Enter sends the form; then wait for the `until` element on the next page."""
    browser.get(server.url + "/login")
    assert focused(browser)["name"] == "email"
    keys(browser, email, Keys.TAB)
    assert focused(browser)["name"] == "password"
    keys(browser, password, Keys.ENTER)
    wait(browser, EC.presence_of_element_located(until))


def tab_to(browser, matches, limit=80, back=False) -> int:
    """Press Tab (Shift+Tab with `back`) until the focused element, as `focused` reads it, satisfies `matches`;
    returns how many presses it took."""
    for presses in range(1, limit + 1):
        if back:
            shift_tab(browser)
        else:
            keys(browser, Keys.TAB)
        if matches(focused(browser)):
            return presses
    raise AssertionError(f"never reached by Tab in {limit} presses; focus is on {focused(browser)}")


def switch_state(browser, switch_id):
    """A switch as the person sees it: its aria-checked and the On/Off words beside it (#<switch_id>-state)."""
    button = browser.find_element(By.ID, switch_id)
    return button.get_attribute("aria-checked"), browser.find_element(By.ID, f"{switch_id}-state").text
