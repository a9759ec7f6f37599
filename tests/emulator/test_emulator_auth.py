"""OAuth token endpoint: JWT-bearer grant with domain-wide delegation, driven by google-auth."""

import time

import httplib2
import pytest
from google.auth import crypt
from google.auth.exceptions import RefreshError
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

CALENDAR = "https://www.googleapis.com/auth/calendar"
CALENDAR_READONLY = "https://www.googleapis.com/auth/calendar.readonly"

UNAUTHORIZED = ("Client is unauthorized to retrieve access tokens using this method, or client not "
                "authorized for any of the scopes requested.")


def refresh_error(creds):
    with pytest.raises(RefreshError) as info:
        creds.refresh(google_request())
    return info.value


def google_request():
    from google.auth.transport.requests import Request

    return Request()


def test_p12_key_is_real_pkcs12_and_grants_a_token(workspace):
    alice = workspace.user("alice")
    svc = workspace.service(alice)  # credentials from the PKCS#12 file with password notasecret
    result = svc.events().list(calendarId="primary").execute()
    assert result["kind"] == "calendar#events"
    assert result["summary"] == alice
    creds = workspace.p12_credentials(alice)
    creds.refresh(google_request())
    assert creds.token.startswith("ya29.")
    assert creds.expiry is not None


def test_json_key_with_subject(workspace):
    alice = workspace.user("alice")
    creds = workspace.json_credentials(alice)
    svc = workspace.service(credentials=creds)
    assert svc.calendars().get(calendarId="primary").execute()["id"] == alice
    assert workspace.sa["json_key"]["token_uri"] == workspace.emu.token_uri
    assert workspace.sa["json_key"]["type"] == "service_account"


def test_invalid_signature(workspace, emulator):
    alice = workspace.user("alice")
    other = emulator.add_service_account()
    forged = workspace.p12_credentials(alice, sa=dict(other, email=workspace.sa["email"]))
    err = refresh_error(forged)
    assert err.args[1] == {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}


def test_unknown_service_account(workspace, emulator):
    alice = workspace.user("alice")
    signer = crypt.RSASigner.from_service_account_info(workspace.sa["json_key"])
    creds = service_account.Credentials(signer, "ghost@emulated-project.iam.gserviceaccount.com",
                                        emulator.token_uri, scopes=[CALENDAR], subject=alice)
    assert refresh_error(creds).args[1]["error"] == "invalid_grant"


def test_subject_not_a_workspace_user(workspace):
    err = refresh_error(workspace.json_credentials("nobody@" + workspace.domain))
    assert err.args[1] == {"error": "invalid_grant", "error_description": "Invalid email or User ID"}


@pytest.mark.parametrize("claims", [
    {"exp": int(time.time()) + 7200},  # longer than one hour
    {"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3700},  # expired
    {"iat": int(time.time()) + 3000, "exp": int(time.time()) + 3600},  # issued in the future
])
def test_assertion_must_be_short_lived(workspace, claims):
    alice = workspace.user("alice")
    err = refresh_error(workspace.p12_credentials(alice, additional_claims=claims))
    assert err.args[1]["error"] == "invalid_grant"
    assert err.args[1]["error_description"].startswith(
        "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.")


def test_audience_is_googles_token_endpoint(workspace):
    alice = workspace.user("alice")
    creds = workspace.p12_credentials(alice, additional_claims={"aud": workspace.emu.token_uri})
    err = refresh_error(creds)
    assert err.args[1]["error"] == "invalid_grant"
    assert "audience" in err.args[1]["error_description"]


def test_scope_not_delegated(workspace):
    alice = workspace.user("alice")
    creds = workspace.p12_credentials(alice, scopes=[CALENDAR, "https://www.googleapis.com/auth/drive"])
    err = refresh_error(creds)
    assert err.args[1] == {"error": "unauthorized_client", "error_description": UNAUTHORIZED}


def test_no_scope_requested(workspace):
    alice = workspace.user("alice")
    err = refresh_error(workspace.p12_credentials(alice, scopes=()))
    assert err.args[1]["error"] == "invalid_scope"


def test_delegation_revoked(workspace, emulator):
    alice = workspace.user("alice")
    workspace.new_service_account()
    workspace.p12_credentials(alice).refresh(google_request())
    emulator.control("DELETE", "/delegations", {"client_id": workspace.sa["client_id"]})
    err = refresh_error(workspace.p12_credentials(alice))
    assert err.args[1]["error"] == "unauthorized_client"


def test_access_token_expires_and_client_refreshes(workspace, emulator):
    alice = workspace.user("alice")
    svc = workspace.service(alice)
    svc.events().list(calendarId="primary").execute()
    tokens_before = emulator.stats()["requests"]["oauth2.token"]
    emulator.advance_clock(3600)
    # The emulator answers 401 authError; googleapiclient refreshes and repeats the call.
    svc.events().list(calendarId="primary").execute()
    assert emulator.stats()["requests"]["oauth2.token"] == tokens_before + 1


def _raw_service(emulator):
    return build("calendar", "v3", http=httplib2.Http(), static_discovery=True,
                 client_options={"api_endpoint": emulator.base_url})


def test_unknown_or_missing_token_is_401(emulator):
    svc = _raw_service(emulator)
    req = svc.events().list(calendarId="primary")
    req.headers["authorization"] = "Bearer ya29.not-a-token"
    with pytest.raises(HttpError) as info:
        req.execute()
    assert info.value.resp.status == 401
    assert info.value.error_details[0]["reason"] == "authError"
    with pytest.raises(HttpError) as info:
        svc.events().list(calendarId="primary").execute()
    assert info.value.resp.status == 401
    assert info.value.error_details[0]["reason"] == "required"


def test_read_only_scope_cannot_write(workspace, emulator, when):
    alice = workspace.user("alice")
    workspace.new_service_account()
    emulator.delegate(workspace.sa["client_id"], [CALENDAR_READONLY])
    svc = workspace.service(alice, scopes=[CALENDAR_READONLY])
    svc.events().list(calendarId="primary").execute()
    with pytest.raises(HttpError) as info:
        svc.events().insert(calendarId="primary", body={"summary": "x", **when("2024-05-01T10:00")}).execute()
    assert info.value.resp.status == 403
    assert info.value.error_details[0]["reason"] == "insufficientPermissions"


def test_other_users_calendar_is_not_found(workspace):
    alice, bob = workspace.user("alice"), workspace.user("bob")
    svc = workspace.service(alice)
    with pytest.raises(HttpError) as info:
        svc.events().list(calendarId=bob).execute()
    assert info.value.resp.status == 404
    assert info.value.error_details[0]["reason"] == "notFound"
