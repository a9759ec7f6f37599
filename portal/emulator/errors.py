"""Errors in the shapes Google returns them (Calendar API envelope, OAuth token endpoint)."""

from __future__ import annotations

import json

AUTH_HELP = (
    "Expected OAuth 2 access token, login cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)

# Default (domain, message) per reason, as Google's Calendar API reports them.
REASON_DEFAULTS = {
    "backendError": ("global", "Backend Error"),
    "rateLimitExceeded": ("usageLimits", "Rate Limit Exceeded"),
    "userRateLimitExceeded": ("usageLimits", "User Rate Limit Exceeded"),
    "quotaExceeded": ("usageLimits", "Calendar usage limits exceeded."),
    "notFound": ("global", "Not Found"),
    "deleted": ("global", "Resource has been deleted"),
    "duplicate": ("global", "The requested identifier already exists."),
    "conditionNotMet": ("global", "Precondition Failed"),
    "invalid": ("global", "Invalid Value"),
    "required": ("global", "Required"),
    "forbidden": ("global", "Forbidden"),
    "forbiddenForNonOrganizer": (
        "calendar",
        "Shared properties can only be changed by the organizer of the event.",
    ),
    "fullSyncRequired": ("calendar", "Sync token is no longer valid, a full sync is required."),
    "timeRangeEmpty": ("calendar", "The specified time range is empty."),
    "insufficientPermissions": ("global", "Insufficient Permission"),
    "authError": ("global", "Invalid Credentials"),
    "serviceUnavailable": ("global", "Service Unavailable"),
    "internalError": ("global", "Internal Error"),
}

STATUS_DEFAULT_REASON = {
    400: "invalid",
    401: "authError",
    403: "rateLimitExceeded",
    404: "notFound",
    409: "duplicate",
    410: "deleted",
    412: "conditionNotMet",
    429: "rateLimitExceeded",
    500: "backendError",
    502: "backendError",
    503: "backendError",
}


class ApiError(Exception):
    """A Calendar API error; rendered as Google's JSON error envelope."""

    def __init__(self, code, reason, message=None, domain=None, top_message=None, location=None,
                 location_type=None, status=None, details=None):
        self.status, self.details = status, details
        default_domain, default_message = REASON_DEFAULTS.get(reason, ("global", reason))
        self.code = code
        self.reason = reason
        self.message = message or default_message
        self.domain = domain or default_domain
        self.top_message = top_message or self.message
        self.location = location
        self.location_type = location_type
        super().__init__(f"{code} {reason}: {self.message}")

    def body(self):
        item = {"domain": self.domain, "reason": self.reason, "message": self.message}
        if self.location:
            item["locationType"] = self.location_type or "parameter"
            item["location"] = self.location
        error = {"errors": [item], "code": self.code, "message": self.top_message}
        if self.status:
            error["status"] = self.status
        if self.details:
            error["details"] = self.details
        return {"error": error}

    def to_bytes(self):
        return json.dumps(self.body()).encode()


def not_found():
    return ApiError(404, "notFound")


def invalid(message="Invalid Value", location=None):
    return ApiError(400, "invalid", message, location=location)


def required(message):
    return ApiError(400, "required", message)


def auth_required():
    return ApiError(401, "required", "Login Required.", location="Authorization", location_type="header",
                    top_message="Request is missing required authentication credential. " + AUTH_HELP)


def auth_invalid():
    return ApiError(401, "authError", "Invalid Credentials", location="Authorization",
                    location_type="header",
                    top_message="Request had invalid authentication credentials. " + AUTH_HELP)


def insufficient_scopes():
    return ApiError(403, "insufficientPermissions", "Insufficient Permission",
                    top_message="Request had insufficient authentication scopes.")


class OAuthError(Exception):
    """An error of the OAuth 2.0 token endpoint: {"error", "error_description"}."""

    def __init__(self, code, error, description):
        self.code = code
        self.error = error
        self.description = description
        super().__init__(f"{code} {error}: {description}")

    def body(self):
        return {"error": self.error, "error_description": self.description}
