"""Local emulator of the Google APIs the portal uses: the OAuth 2.0 token endpoint (JWT-bearer grant
with domain-wide delegation) and Calendar API v3, faithful enough for google-auth and
google-api-python-client to talk to it over real HTTP.

    from portal.emulator import create_emulator_app
    app = create_emulator_app()            # in-memory state
    app = create_emulator_app("demo.db")   # state kept in a SQLite file

See portal.emulator.server.EmulatorServer for running it in a background thread.
"""

from portal.emulator.app import EmulatorApp


def create_emulator_app(state_path=None):
    """The emulator as a WSGI application; `state_path` optionally persists state to SQLite."""
    return EmulatorApp(state_path)


__all__ = ["EmulatorApp", "create_emulator_app"]
