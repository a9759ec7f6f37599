"""The Google adapter: service-account credentials, Calendar clients, and what Google's errors mean.

Everything the portal says to Google goes through a `CalendarClient`, which acts as one Workspace user
through domain-wide delegation. Its failures come out as one of a small hierarchy of exceptions, so that
whoever calls (the settings page's connection test, the sync engine) knows at which level to react:

    GoogleError                 anything Google (or the way to Google) refused
    ├── IntegrationError        the organization's set-up is wrong: every user fails the same way
    ├── UserError               one user cannot be synced (not in the Workspace, calendar unreachable)
    ├── ItemError               one event was refused; the rest of the cycle goes on
    │   └── SyncTokenExpired    410 fullSyncRequired: list the calendar again without a sync token
    └── TransientError          network, timeouts, 5xx, rate limits: try again later

Every error carries a stable `code` from `ERRORS`, a `cause` and a `fix` written for the admin, and what
Google itself said (`status`, `reason`, `detail`) for the journal. No error ever holds key material.

This module knows nothing of Flask or the database: it gets a `SigningKey` (decrypted by
`portal.integration`) and `Endpoints` (read from the app config by `Endpoints.from_config`).
"""

from __future__ import annotations

import functools
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import google_auth_httplib2
import httplib2
import requests
from google.auth import crypt
from google.auth import exceptions as auth_exceptions
from google.auth.transport.requests import Request as AuthRequest
from google.oauth2 import service_account
from googleapiclient import discovery, discovery_cache
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

if TYPE_CHECKING:
    from portal.sync.google_writes import EventWrite

log = logging.getLogger(__name__)

# `calendar.events` is the narrowest scope that covers everything the sync does: events.list (with sync
# tokens), insert/update/patch/delete/instances on the user's primary calendar, events.watch and
# channels.stop. It cannot read or change calendar lists, ACLs or settings, which the portal never needs.
# The events.list answer carries the calendar's name and time zone, so the connection test needs no more.
SCOPES: tuple[str, ...] = ("https://www.googleapis.com/auth/calendar.events",)
GOOGLE_SCOPES = list(SCOPES)
# What many admins already delegated (and many guides say): it covers everything `calendar.events` does and
# more. Accepted when the delegation has it and not the narrow scope; the settings page then says so.
BROAD_SCOPES: tuple[str, ...] = ("https://www.googleapis.com/auth/calendar",)


def accepted_scopes(preferred: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The scope sets the portal can work with, best first (configured scopes are taken as they are)."""
    return [preferred, BROAD_SCOPES] if preferred == SCOPES else [preferred]

DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
DEFAULT_API_ENDPOINT = "https://www.googleapis.com"
DEFAULT_BATCH_URI = "https://www.googleapis.com/batch/calendar/v3"
DEFAULT_TIMEOUT = 20.0
CALENDAR_SERVICE_PATH = "calendar/v3/"


@dataclass(frozen=True)
class Endpoints:
    """Where Google is. The defaults are Google's; tests and the demo point them at the emulator."""

    token_uri: str = DEFAULT_TOKEN_URI
    api_endpoint: str = DEFAULT_API_ENDPOINT
    batch_uri: str = DEFAULT_BATCH_URI
    timeout: float = DEFAULT_TIMEOUT
    scopes: tuple[str, ...] = SCOPES

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Endpoints:
        return cls(
            token_uri=config.get("GOOGLE_TOKEN_URI") or DEFAULT_TOKEN_URI,
            api_endpoint=config.get("GOOGLE_API_ENDPOINT") or DEFAULT_API_ENDPOINT,
            batch_uri=config.get("GOOGLE_BATCH_URI") or batch_uri_for(config.get("GOOGLE_API_ENDPOINT")),
            timeout=float(config.get("GOOGLE_TIMEOUT") or DEFAULT_TIMEOUT),
            scopes=_scopes(config.get("GOOGLE_SCOPES")),
        )

    @property
    def calendar_base_url(self) -> str:
        """The Calendar API's base URL. A bare host (Google's default) gets the service path appended;
        a URL with a path is taken as it is, so an emulator may serve the API wherever it likes."""
        base = self.api_endpoint.rstrip("/")
        scheme, _, rest = base.partition("://")
        if "/" not in rest:
            return f"{base}/{CALENDAR_SERVICE_PATH}"
        return base + "/"


def batch_uri_for(api_endpoint: str | None) -> str:
    """Where batches go when only the API endpoint was moved (an emulator, a proxy): beside the Calendar API
    there, as on Google (google-api-python-client builds batch URIs from Google's root, never from
    `api_endpoint`, so without this a moved endpoint would still send every batch to Google)."""
    if not api_endpoint or api_endpoint.rstrip("/") == DEFAULT_API_ENDPOINT:
        return DEFAULT_BATCH_URI
    base = api_endpoint.rstrip("/")
    if base.endswith("/" + CALENDAR_SERVICE_PATH.rstrip("/")):
        base = base[: -len(CALENDAR_SERVICE_PATH)]
    return f"{base}/batch/calendar/v3"


def _scopes(value) -> tuple[str, ...]:
    """Scopes from config: a list, or (from the environment) one string, comma- or space-separated."""
    if not value:
        return SCOPES
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    return tuple(value)


@dataclass(frozen=True)
class SigningKey:
    """What signs the token requests of one service account. Its repr never shows the private key."""

    service_account_email: str
    private_key_pem: bytes = field(repr=False)
    key_id: str = ""  # as Google Cloud lists it; named in error messages
    jwt_key_id: str = ""  # the `kid` header: JSON keys' private_key_id; P12 keys are signed without one
    fingerprint: str = ""
    client_id: str = ""
    project_id: str = ""


# ---------------------------------------------------------------------------------------------------
# Errors


class GoogleError(Exception):
    """Something Google refused, or Google could not be reached. `str()` is the cause."""

    level = "google"

    def __init__(self, code: str, cause: str, fix: str, *, status: int | None = None, reason: str = "",
                 detail: str = "", subject: str | None = None) -> None:
        super().__init__(cause)
        self.code = code
        self.cause = cause
        self.fix = fix
        self.status = status
        self.reason = reason
        self.detail = detail
        self.subject = subject

    @property
    def retryable(self) -> bool:
        return isinstance(self, TransientError)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe summary for journals, audit entries and API answers."""
        return {"level": self.level, "code": self.code, "cause": self.cause, "fix": self.fix,
                "status": self.status, "reason": self.reason, "detail": self.detail, "subject": self.subject}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.code} status={self.status} reason={self.reason!r}>"


class IntegrationError(GoogleError):
    """The organization's set-up is wrong (key, delegation, Cloud project): pause the organization."""

    level = "integration"


class UserError(GoogleError):
    """One user cannot be synced; the organization's other users go on."""

    level = "user"


class ItemError(GoogleError):
    """Google refused one event; record it on that item and go on with the rest."""

    level = "item"


class SyncTokenExpired(ItemError):
    """410 fullSyncRequired: the sync token is no longer valid; list the calendar again without it."""


class TransientError(GoogleError):
    """Worth retrying: the network, a timeout, Google's 5xx, a rate limit."""

    level = "transient"


# code: (class, cause, fix). Placeholders: {sa} service account, {client_id}, {key_id}, {scopes}
# (comma-separated, as the Admin console wants them), {project}, {email} (the user acted as), {detail}.
ERRORS: dict[str, tuple[type[GoogleError], str, str]] = {
    "invalid_jwt_signature": (
        IntegrationError,
        "Google refused the private key: it does not belong to the service account {sa}, or it was "
        "deleted in Google Cloud.",
        "In Google Cloud console > IAM & Admin > Service accounts > {sa} > Keys, check that the key "
        "{key_id} is listed. If it is not, add a new key (P12 or JSON), download it and upload it here; "
        "also check that the service account e-mail above is the one the key was made for.",
    ),
    "service_account_not_found": (
        IntegrationError,
        "Google does not know the service account {sa}: it was never created, was deleted, or is "
        "disabled.",
        "Copy the service account's e-mail exactly from Google Cloud console > IAM & Admin > Service "
        "accounts, check that it is enabled, and save it here together with one of its keys.",
    ),
    "delegation_missing": (
        IntegrationError,
        "Domain-wide delegation is missing for client ID {client_id}, or it does not include all the "
        "scopes the portal needs.",
        "In the Google Admin console > Security > Access and data control > API controls > Manage "
        "domain-wide delegation, add (or edit) client ID {client_id} with exactly these OAuth scopes: "
        "{scopes} — then authorize and test again (changes can take a few minutes).",
    ),
    "scopes_insufficient": (
        IntegrationError,
        "Google issued a token without the Calendar permission the portal needs.",
        "In the Google Admin console's domain-wide delegation, give client ID {client_id} these OAuth "
        "scopes: {scopes}.",
    ),
    "invalid_scope": (
        IntegrationError,
        "Google refused the OAuth scopes the portal asked for.",
        "Check the portal's GOOGLE_SCOPES setting; it should be {scopes}.",
    ),
    "clock_skew": (
        IntegrationError,
        "Google refused the token request because this server's clock is wrong.",
        "Synchronize the portal server's clock (NTP) and test again.",
    ),
    "token_refused": (
        IntegrationError,
        "Google refused to issue a token for the service account {sa}: {detail}",
        "Check the service account e-mail, the key and the domain-wide delegation, then test again.",
    ),
    "token_rejected": (
        IntegrationError,
        "Google rejected the portal's access token for {email}.",
        "Test the connection again; if it keeps failing, upload a new key for {sa}.",
    ),
    "api_not_enabled": (
        IntegrationError,
        "The Google Calendar API is not enabled in the service account's Google Cloud project{project}.",
        "In Google Cloud console > APIs & Services > Library, open \"Google Calendar API\" for that "
        "project and click Enable; wait a few minutes, then test again.",
    ),
    "key_unreadable": (
        IntegrationError,
        "The stored private key can no longer be opened: {detail}",
        "Upload the service account's key file again (and its password, for a P12 file).",
    ),
    "not_configured": (
        IntegrationError,
        "The integration is not set up yet: {detail}",
        "Enter the service account e-mail and upload its private key, then test again.",
    ),
    "unknown_user": (
        UserError,
        "{email} is not a user of the Google Workspace the service account belongs to.",
        "E-mail addresses must be the same in both systems: use the address the person has in Google "
        "Workspace (change it in the portal, or create the user in Workspace).",
    ),
    "calendar_not_found": (
        UserError,
        "The primary calendar of {email} could not be found.",
        "Check in the Google Admin console that Google Calendar is turned on for this user.",
    ),
    "calendar_forbidden": (
        UserError,
        "Google refused access to the calendar of {email}: {detail}",
        "Check in the Google Admin console that Google Calendar is turned on for this user and that the "
        "account is not suspended.",
    ),
    "unreachable": (
        TransientError,
        "Google could not be reached ({detail}).",
        "Check the portal server's internet connection, DNS, proxy and firewall (outbound HTTPS to "
        "oauth2.googleapis.com and www.googleapis.com), then test again.",
    ),
    "timeout": (
        TransientError,
        "Google could not be reached: it did not answer in time.",
        "Try again in a few minutes; if it keeps happening, check the server's network connection.",
    ),
    "rate_limited": (
        TransientError,
        "Google asked the portal to slow down ({detail}).",
        "Nothing to do: the portal retries later by itself.",
    ),
    "google_unavailable": (
        TransientError,
        "Google had a temporary problem ({detail}).",
        "Nothing to do: the portal retries later by itself. Test again in a few minutes.",
    ),
    "sync_token_expired": (
        SyncTokenExpired,
        "Google asks for a full synchronization of {email}'s calendar.",
        "Nothing to do: the portal lists the calendar again by itself.",
    ),
    "event_not_found": (ItemError, "The event no longer exists in Google.", "Nothing to do."),
    "event_deleted": (ItemError, "The event was deleted in Google.", "Nothing to do."),
    "duplicate": (ItemError, "The event exists in Google already.", "Nothing to do: the portal links it."),
    "precondition_failed": (
        ItemError,
        "The event changed in Google in the meantime.",
        "Nothing to do: the portal reads it again in the next cycle.",
    ),
    "not_organizer": (
        ItemError,
        "Only the organizer of this event can change it in Google.",
        "Change the activity as its owner.",
    ),
    "locked_copy": (
        ItemError,
        "This event is a locked copy in Google: its title, description, place, times and repeats cannot change.",
        "Change it where the original event is kept.",
    ),
    "made_by_gmail": (
        ItemError,
        "Gmail made this event: Google lets nobody change its title, description, place, times or guests.",
        "Change it in the e-mail it came from, or keep your own notes in a separate activity.",
    ),
    "event_refused": (
        ItemError,
        "Google refused the event: {detail}",
        "Correct the activity (see the message) and save it again.",
    ),
    "google_error": (
        UserError,
        "Google answered with an unexpected error: {detail}",
        "Test the connection again; if it keeps failing, contact the helpdesk with this message.",
    ),
}


class _Params(dict):
    def __missing__(self, key: str) -> str:
        return ""


def error_for(code: str, *, status: int | None = None, reason: str = "", detail: str = "",
              subject: str | None = None, **params: Any) -> GoogleError:
    """The catalogue's error `code`, its texts filled in with `params`."""
    cls, cause, fix = ERRORS[code]
    values = _Params({"detail": detail, "email": subject or "this user", "sa": "the service account",
                      "client_id": "(the service account's client ID)", "key_id": "you uploaded",
                      "scopes": ",".join(SCOPES)})
    values.update({k: v for k, v in params.items() if v})
    if values.get("project") and not str(values["project"]).startswith(" "):
        values["project"] = f" ({values['project']})"
    return cls(code, cause.format_map(values), fix.format_map(values), status=status, reason=reason,
               detail=detail, subject=subject)


def _token_error(exc: auth_exceptions.RefreshError) -> tuple[str, str]:
    """(error, error_description) from google-auth's RefreshError: args are (text, response data)."""
    data = exc.args[1] if len(exc.args) > 1 else None
    if isinstance(data, Mapping):
        return str(data.get("error") or ""), str(data.get("error_description") or "")
    text = str(exc.args[0]) if exc.args else ""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, Mapping):
        return str(parsed.get("error") or ""), str(parsed.get("error_description") or "")
    error, _, description = text.partition(": ")
    return error.strip(), description.strip()


def _http_error(exc: HttpError) -> tuple[int, str, str]:
    """(status, reason, message) of a Calendar API error, the reason read from `error_details`."""
    status = int(getattr(exc.resp, "status", 0) or 0)
    reason, message = "", ""
    details = exc.error_details
    if isinstance(details, list):
        for item in details:
            if not isinstance(item, Mapping):
                continue
            # Classic envelope: {"reason": "accessNotConfigured"}; google.rpc.ErrorInfo: {"reason": "SERVICE_DISABLED"}
            reason = reason or str(item.get("reason") or "")
            message = message or str(item.get("message") or "")
    if not message:
        try:
            body = json.loads(exc.content.decode("utf-8", "replace"))
            message = str(body.get("error", {}).get("message") or "")
        except (ValueError, AttributeError):
            message = ""
    return status, reason, message or str(getattr(exc.resp, "reason", "") or "")


_NETWORK_ERRORS = (OSError, httplib2.HttpLib2Error, requests.RequestException)


def _is_timeout(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, TimeoutError | socket.timeout | requests.Timeout):
            return True
        exc = exc.__cause__ or exc.__context__ or (exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None)
        seen += 1
    return False


def _network_detail(exc: BaseException) -> str:
    inner = exc.args[0] if isinstance(exc, auth_exceptions.TransportError) and exc.args else exc
    if isinstance(inner, requests.ConnectionError):
        return "the connection was refused or the host is unknown"
    text = type(inner).__name__ if not str(inner) else f"{type(inner).__name__}: {inner}"
    return text[:200]


def classify(exc: BaseException, *, key: SigningKey | None = None, subject: str | None = None,
             scopes: Iterable[str] = SCOPES, item: bool = False) -> GoogleError:
    """What `exc` (raised by google-auth, google-api-python-client or the network) means for the portal.

    `item` says whether the failed request was about one event (an insert, an update) rather than the
    user's calendar as a whole: a 404 or 400 then concerns that item only.
    """
    if isinstance(exc, GoogleError):
        return exc
    params = {"subject": subject, "scopes": ",".join(scopes)}
    if key is not None:
        params |= {"sa": key.service_account_email, "client_id": key.client_id, "key_id": key.key_id,
                   "project": key.project_id}

    if isinstance(exc, auth_exceptions.RefreshError):
        return _classify_token_error(exc, params)
    if isinstance(exc, HttpError):
        return _classify_http_error(exc, params, item=item)
    if isinstance(exc, (auth_exceptions.TransportError, *_NETWORK_ERRORS)):
        if _is_timeout(exc):
            return error_for("timeout", detail=_network_detail(exc), **params)
        return error_for("unreachable", detail=_network_detail(exc), **params)

    if isinstance(exc, auth_exceptions.GoogleAuthError | ValueError):
        # google-auth could not even sign: the stored key is not a usable RSA key.
        return error_for("key_unreadable", detail=type(exc).__name__, **params)
    return error_for("google_error", detail=type(exc).__name__, **params)


def _classify_token_error(exc: auth_exceptions.RefreshError, params: dict) -> GoogleError:
    """What Google's token endpoint refusing the service account's assertion means."""
    error, description = _token_error(exc)
    detail = f"{error}: {description}" if description else error
    if error == "invalid_grant":
        lowered = description.lower()
        if "jwt signature" in lowered:
            return error_for("invalid_jwt_signature", reason=error, detail=detail, **params)
        if "invalid email or user id" in lowered or "not a valid email" in lowered:
            return error_for("unknown_user", reason=error, detail=detail, **params)
        if "account not found" in lowered:
            return error_for("service_account_not_found", reason=error, detail=detail, **params)
        if "iat" in lowered or "exp" in lowered or "timeframe" in lowered:
            return error_for("clock_skew", reason=error, detail=detail, **params)
    if error == "unauthorized_client":
        return error_for("delegation_missing", reason=error, detail=detail, **params)
    if error in ("invalid_client", "disabled_client"):
        return error_for("service_account_not_found", reason=error, detail=detail, **params)
    if error == "invalid_scope":
        return error_for("invalid_scope", reason=error, detail=detail, **params)
    if getattr(exc, "retryable", False) or error in ("server_error", "temporarily_unavailable",
                                                      "internal_failure"):
        return error_for("google_unavailable", reason=error, detail=detail, **params)
    return error_for("token_refused", reason=error, detail=detail or "no reason given", **params)


def _classify_http_error(exc: HttpError, params: dict, *, item: bool) -> GoogleError:
    """What the Calendar API's error answer means (its status and its first error's reason)."""
    status, reason, message = _http_error(exc)
    detail = f"{status} {reason}: {message}" if reason else f"{status}: {message}"
    args = {"status": status, "reason": reason, "detail": detail, **params}
    if reason in ("accessNotConfigured", "SERVICE_DISABLED"):
        return error_for("api_not_enabled", **args)
    if reason in ("rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "RATE_LIMIT_EXCEEDED") \
            or status == 429:
        return error_for("rate_limited", **args)
    if status >= 500:
        return error_for("google_unavailable", **args)
    if reason in ("insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"):
        return error_for("scopes_insufficient", **args)
    if status == 401:
        return error_for("token_rejected", **args)
    if status == 410:
        return error_for("sync_token_expired" if reason == "fullSyncRequired" or not item
                         else "event_deleted", **args)
    if status == 409:
        return error_for("duplicate", **args)
    if status == 412:
        return error_for("precondition_failed", **args)
    if reason == "forbiddenForNonOrganizer":
        return error_for("not_organizer", **args)
    if status == 404:
        return error_for("event_not_found" if item else "calendar_not_found", **args)
    if status == 403 and not item:
        return error_for("calendar_forbidden", **args)
    if item and 400 <= status < 500:
        return error_for("event_refused", **args)
    return error_for("google_error", **args)


# ---------------------------------------------------------------------------------------------------
# Credentials and the token cache


@dataclass(frozen=True)
class TokenKey:
    """What a token was issued for: the key (by its fingerprint, so a rotated key never gets the old key's
    tokens), the service account, where it was asked, the scopes, and the user acted as."""

    fingerprint: str
    service_account_email: str
    token_uri: str
    scopes: tuple[str, ...]
    subject: str


class TokenStore:
    """Where the workers share access tokens, beside each process's own cache (`TokenCache(store=...)`).

    The default shares nothing. `portal.sync.token_store` keeps them in the database, encrypted. A store's
    failure must not stop the sync: `TokenCache` then asks Google, as without a store.
    """

    def get(self, key: TokenKey) -> tuple[str, datetime] | None:
        """(access token, expiry as naive UTC, as google-auth keeps it), or None."""
        return None

    def put(self, key: TokenKey, token: str, expiry: datetime) -> None:
        """Keep a token Google just issued for the other processes."""

    def forget(self, *, fingerprint: str | None = None, subject: str | None = None) -> None:
        """Drop the shared tokens of one key, of one user, or all of them."""


class TokenCache:
    """One `service_account.Credentials` per (key, user), so a token is reused until shortly before it
    expires (google-auth refreshes 3m45s early): one token request per user per hour, not per cycle.

    Keyed by the key's fingerprint, so a new key (rotation) never reuses a token the old one obtained. With a
    `store`, a token another process obtained is taken from there before Google is asked, and a new one is
    put there: one token request per user per hour across all the workers. The store is read only when
    this process holds no valid token, so a cycle whose token is still good costs no look-up.
    """

    def __init__(self, store: TokenStore | None = None) -> None:
        self._entries: dict[tuple, tuple[service_account.Credentials, threading.Lock]] = {}
        self._lock = threading.Lock()
        self._in_use: dict[tuple, tuple[str, ...]] = {}  # per key: the scopes the delegation granted
        # One signer per key, shared by its users' credentials: opening a PEM key costs tens of milliseconds
        # of CPU, which once per user would be minutes of a worker's time for an organization of thousands.
        self._signers: dict[tuple[bytes, str], crypt.RSASigner] = {}
        self.store = store or TokenStore()

    @staticmethod
    def _key_of(key: SigningKey, endpoints: Endpoints) -> tuple:
        """Which key asks where for what; its first item is the key's fingerprint."""
        return (key.fingerprint or id(key), key.service_account_email, endpoints.token_uri, endpoints.scopes)

    def scopes_in_use(self, key: SigningKey, endpoints: Endpoints) -> tuple[str, ...] | None:
        with self._lock:
            return self._in_use.get(self._key_of(key, endpoints))

    def _entry(self, key: SigningKey, subject: str, endpoints: Endpoints):
        cache_key = (self._key_of(key, endpoints), subject.lower())
        with self._lock:
            entry = self._entries.get(cache_key)
            if entry is None:
                signer_key = (key.private_key_pem, key.jwt_key_id)
                signer = self._signers.get(signer_key)
                if signer is None:
                    signer = self._signers[signer_key] = crypt.RSASigner.from_string(
                        key.private_key_pem, key_id=key.jwt_key_id or None)
                credentials = service_account.Credentials(
                    signer, key.service_account_email, endpoints.token_uri,
                    scopes=list(endpoints.scopes), subject=subject,
                )
                entry = self._entries[cache_key] = (credentials, threading.Lock())
            return entry

    def credentials(self, key: SigningKey, subject: str, endpoints: Endpoints) -> service_account.Credentials:
        """Credentials for `subject`, with a valid token (obtained now only when needed).

        Raises a classified `GoogleError` when Google refuses or cannot be reached. The scopes asked for are
        the narrowest the delegation grants (see `accepted_scopes`); what worked is asked for first next time.
        """
        choices = accepted_scopes(endpoints.scopes)
        known = self.scopes_in_use(key, endpoints)
        if known in choices:
            choices.remove(known)
            choices.insert(0, known)
        refused = None
        for scopes in choices:
            credentials, lock = self._entry(key, subject, replace(endpoints, scopes=scopes))
            with lock:  # one refresh at a time per user; the others wait and reuse its token
                if not credentials.valid and not self._shared(credentials, key, subject, endpoints, scopes):
                    try:
                        credentials.refresh(_token_request(endpoints.timeout))
                    except Exception as exc:  # noqa: BLE001 - classify() sorts whatever google-auth raises
                        error = classify(exc, key=key, subject=subject, scopes=endpoints.scopes)
                        if error.code != "delegation_missing":
                            raise error from None
                        refused = refused or error
                        continue
                    self._share(credentials, key, subject, endpoints, scopes)
            with self._lock:
                self._in_use[self._key_of(key, endpoints)] = scopes
            return credentials
        raise refused

    @staticmethod
    def _token_key(key: SigningKey, subject: str, endpoints: Endpoints, scopes: tuple[str, ...]) -> TokenKey | None:
        if not key.fingerprint:  # a key without a fingerprint cannot be told from the next one: never shared
            return None
        return TokenKey(key.fingerprint, key.service_account_email, endpoints.token_uri, tuple(scopes),
                        subject.lower())

    def _shared(self, credentials, key: SigningKey, subject: str, endpoints: Endpoints, scopes) -> bool:
        """Take a token another process obtained, if the store has one still valid; True when taken."""
        token_key = self._token_key(key, subject, endpoints, scopes)
        if token_key is None:
            return False
        try:
            found = self.store.get(token_key)
        except Exception:  # noqa: BLE001 - a store that cannot answer only costs a token request
            log.warning("The shared token store could not be read; asking Google", exc_info=True)
            return False
        if found is None:
            return False
        credentials.token, credentials.expiry = found
        if credentials.valid:  # google-auth's own margin: a token about to expire is not taken
            return True
        credentials.token = credentials.expiry = None
        return False

    def _share(self, credentials, key: SigningKey, subject: str, endpoints: Endpoints, scopes) -> None:
        token_key = self._token_key(key, subject, endpoints, scopes)
        if token_key is None or not credentials.token or credentials.expiry is None:
            return
        try:
            self.store.put(token_key, credentials.token, credentials.expiry)
        except Exception:  # noqa: BLE001 - this process keeps its token; the others ask Google themselves
            log.warning("The shared token store could not be written", exc_info=True)

    def forget(self, *, fingerprint: str | None = None, subject: str | None = None) -> None:
        """Drop cached tokens: of one key, of one user, or all of them; in the shared store too."""
        with self._lock:
            for cache_key in list(self._entries):
                if fingerprint is not None and cache_key[0][0] != fingerprint:
                    continue
                if subject is not None and cache_key[1] != subject.lower():
                    continue
                del self._entries[cache_key]
            if subject is None:
                for in_use in [k for k in self._in_use if fingerprint is None or k[0] == fingerprint]:
                    del self._in_use[in_use]
                self._signers.clear()  # opened again when next needed
        self.store.forget(fingerprint=fingerprint, subject=subject.lower() if subject else None)

    def __len__(self) -> int:
        return len(self._entries)


def _token_request(timeout: float) -> Callable:
    session = requests.Session()
    return functools.partial(AuthRequest(session), timeout=timeout)


TOKENS = TokenCache()


@functools.cache
def _calendar_document() -> str:
    document = discovery_cache.get_static_doc("calendar", "v3")
    if document is None:  # pragma: no cover - the document ships with google-api-python-client
        raise RuntimeError("google-api-python-client has no static Calendar discovery document")
    return document


# ---------------------------------------------------------------------------------------------------
# The Calendar client


@dataclass(frozen=True)
class CalendarInfo:
    """What the connection test learned about a user's primary calendar."""

    email: str
    summary: str
    time_zone: str
    has_events: bool = False  # whether the one event asked for came back: the events could be read


_THREAD = threading.local()


def _thread_http(timeout: float) -> httplib2.Http:
    """This thread's connection to Google (per timeout)."""
    pool = getattr(_THREAD, "http", None)
    if pool is None:
        pool = _THREAD.http = {}
    if timeout not in pool:
        pool[timeout] = httplib2.Http(timeout=timeout)
    return pool[timeout]


class _NoHttp:
    """The shared Calendar resource's own `http`: it must never send anything. Each request is run with the
    http of the user it acts as (`CalendarClient.execute`), so a request without one fails here instead of
    going out with no token, or with another user's."""

    def request(self, *args, **kwargs):
        raise RuntimeError("a Calendar request was sent without the http of the user it acts as")

    def close(self) -> None:
        pass


@functools.cache
def calendar_resource(base_url: str):
    """The Calendar v3 Resource for `base_url`, built once per process and shared by every client and thread.

    Building it turns the discovery document into request builders and pretty-printed docstrings: a third
    of an idle cycle's CPU when it was built per user per cycle. It holds no credentials (see `_NoHttp`);
    its builders read it and never change it, so threads share it safely. Returns (service, events)."""
    service = discovery.build_from_document(_calendar_document(), http=_NoHttp(),
                                            client_options={"api_endpoint": base_url})
    # Each `.events()` call would build the nested resource from the document again (about 1 ms).
    events = service.events()
    service.events = lambda: events
    return service, events


class CalendarClient:
    """The Calendar API acting as `subject`, through the service account's domain-wide delegation.

    Build requests on `.service` (a googleapiclient Resource shared by the process) and run them with
    `.execute(...)`, or batch them with `.new_batch(...)` and `.execute_batch(...)`: those send them with this
    user's token. Failures come out as `GoogleError`s. A client is cheap; use it in the thread that made it
    (its connection is that thread's): make one per user per cycle; tokens are shared through the cache.
    """

    def __init__(self, key: SigningKey, subject: str, endpoints: Endpoints | None = None,
                 tokens: TokenCache = TOKENS) -> None:
        self.key = key
        self.subject = subject.strip().lower()
        self.endpoints = endpoints or Endpoints()
        self.tokens = tokens
        self._http = None
        self.requests_made = 0

    def _classify(self, exc: BaseException, *, item: bool = False) -> GoogleError:
        return classify(exc, key=self.key, subject=self.subject, scopes=self.endpoints.scopes, item=item)

    def authorize(self) -> service_account.Credentials:
        """Make sure there is a valid token for the user (from the cache, or obtained now)."""
        return self.tokens.credentials(self.key, self.subject, self.endpoints)

    @property
    def service(self):
        """The Calendar v3 Resource (built once per process from the discovery document shipped with the
        client library); requests built on it are sent only through `execute` / `execute_batch`."""
        return calendar_resource(self.endpoints.calendar_base_url)[0]

    @property
    def http(self) -> google_auth_httplib2.AuthorizedHttp:
        """This user's connection, which signs every request with the user's token. The connection underneath
        is the thread's: kept open from one cycle to the next (no new TCP and TLS handshake per cycle), and
        never used by two threads at once (httplib2 is not thread-safe)."""
        if self._http is None:
            self._http = google_auth_httplib2.AuthorizedHttp(self.authorize(), http=_thread_http(self.endpoints.timeout))
        return self._http

    def execute(self, request, *, item: bool = False, num_retries: int = 0) -> Any:
        """Run one request built on `.service`; `item` marks a request about a single event."""
        try:
            self.authorize()
            self.requests_made += 1
            return request.execute(http=self.http, num_retries=num_retries)
        except GoogleError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure of the client library becomes a GoogleError
            raise self._classify(exc, item=item) from None

    def new_batch(self, callback: Callable | None = None) -> BatchHttpRequest:
        """A batch request. Its URI comes from the config: the client ignores `api_endpoint` for batches."""
        return BatchHttpRequest(callback=callback, batch_uri=self.endpoints.batch_uri)

    def execute_batch(self, batch: BatchHttpRequest) -> None:
        """Send a batch; per-request failures reach its callback as HttpError (classify them with
        `classify_item_error`), a failure of the batch as a whole raises a `GoogleError`."""
        try:
            self.authorize()
            self.requests_made += 1
            # Each part carries its own Authorization, taken from its request's http: a batch may carry other
            # users' writes (built with their `request_for`); a part built on the shared resource is this user's.
            for request in batch._requests.values():
                if isinstance(request.http, _NoHttp):
                    request.http = self.http
            batch.execute(http=self.http)
        except GoogleError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure of the client library becomes a GoogleError
            raise self._classify(exc) from None

    def classify_item_error(self, exc: BaseException) -> GoogleError:
        return self._classify(exc, item=True)

    # -- the Events resource: the only place the sync builds its requests

    def request_for(self, write: EventWrite):
        """The request for a planned write (not sent: run it with `execute` or add it to a batch)."""
        events = self.service.events()
        if write.method == "insert":
            request = events.insert(calendarId="primary", body=dict(write.body), sendUpdates="none")
        elif write.method == "patch":
            request = events.patch(calendarId="primary", eventId=write.event_id, body=dict(write.body),
                                   sendUpdates="none")
        else:
            request = events.delete(calendarId="primary", eventId=write.event_id, sendUpdates="none")
        if write.if_match:
            request.headers["If-Match"] = write.if_match
        request.http = self.http  # in a batch of several users' writes, this one still goes as this user
        return request

    def list_changes(self, sync_token: str | None, *, time_min: str | None = None, page_size: int = 2500,
                     page_token: str | None = None) -> dict:
        """One page of the calendar's changes since `sync_token` (or, without one, of its events from
        `time_min` on), deleted ones included; a 410 raises SyncTokenExpired."""
        params = {"calendarId": "primary", "maxResults": page_size, "singleEvents": False, "showDeleted": True}
        if sync_token:
            params["syncToken"] = sync_token
        elif time_min:
            params["timeMin"] = time_min
        if page_token:
            params["pageToken"] = page_token
        return self.execute(self.service.events().list(**params))

    def get_event(self, event_id: str) -> Any:
        """One event (or occurrence) as the user's calendar holds it; Google's refusal raises."""
        return self.execute(self.service.events().get(calendarId="primary", eventId=event_id), item=True)

    def exception_instances(self, event: Mapping) -> list[dict]:
        """The changed and cancelled occurrences of a series (listed by its iCalUID, not expanded)."""
        if not event.get("recurrence"):
            return []
        answer = self.execute(self.service.events().list(
            calendarId="primary", iCalUID=event.get("iCalUID") or event["id"], showDeleted=True,
            singleEvents=False, maxResults=2500), item=True)
        return [e for e in answer.get("items") or [] if e.get("recurringEventId") == event["id"]]

    def watch(self, body: Mapping) -> Any:
        """Open a notification channel on the user's primary calendar's events."""
        return self.execute(self.service.events().watch(calendarId="primary", body=dict(body)))

    def stop_channel(self, channel_id: str, resource_id: str) -> None:
        self.execute(self.service.channels().stop(body={"id": channel_id, "resourceId": resource_id}))

    def read_primary_calendar(self) -> CalendarInfo:
        """Read the user's primary calendar: one event at most, plus the calendar's name and zone."""
        answer = self.execute(self.service.events().list(calendarId="primary", maxResults=1, singleEvents=False))
        return CalendarInfo(email=self.subject, summary=str(answer.get("summary") or self.subject),
                            time_zone=str(answer.get("timeZone") or ""), has_events=bool(answer.get("items")))
