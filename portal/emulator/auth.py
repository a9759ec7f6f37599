"""Service account keys (PKCS#12 + JSON, as Google issues them) and the OAuth 2.0 token endpoint
(JWT-bearer grant with domain-wide delegation)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from portal.emulator.errors import OAuthError
from portal.emulator.state import AccessToken, ServiceAccount

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_AUDIENCES = (
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v4/token",
    "https://accounts.google.com/o/oauth2/token",
)
P12_PASSWORD = "notasecret"
TOKEN_LIFETIME = 3599
MAX_ASSERTION_LIFETIME = 3600
CLOCK_SKEW = 300
PROJECT_ID = "emulated-project"

MSG_SIGNATURE = "Invalid JWT Signature."
MSG_SUBJECT = "Invalid email or User ID"
MSG_LIFETIME = (
    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
    "Check your iat and exp values in the JWT claim."
)
MSG_UNAUTHORIZED = (
    "Client is unauthorized to retrieve access tokens using this method, or client not authorized "
    "for any of the scopes requested."
)
MSG_AUDIENCE = "Invalid JWT: Failed audience check. The right audience is https://oauth2.googleapis.com/token"
MSG_ACCOUNT = "Invalid grant: account not found"
MSG_SCOPE = "Invalid OAuth scope or ID token audience provided."


def mint_service_account(email, client_id, token_uri):
    """A fresh RSA key; returns (ServiceAccount, p12 bytes, json key dict)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_id = secrets.token_hex(20)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, client_id)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(P12_PASSWORD.encode())
    )
    p12 = pkcs12.serialize_key_and_certificates(b"privatekey", key, cert, None, encryption)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    account = ServiceAccount(email, client_id, private_pem, key_id, public_pem)
    json_key = {
        "type": "service_account",
        "project_id": PROJECT_ID,
        "private_key_id": key_id,
        "private_key": private_pem,
        "client_email": email,
        "client_id": client_id,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
        + email.replace("@", "%40"),
        "universe_domain": "googleapis.com",
    }
    return account, p12, json_key


def _b64decode(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def new_access_token(state, user, scopes, client_id=None):
    token = "ya29.emu-" + secrets.token_urlsafe(32)
    expiry = state.now() + dt.timedelta(seconds=TOKEN_LIFETIME)
    state.tokens[token] = AccessToken(token, user, scopes, expiry, client_id)
    return {"access_token": token, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"}


def token_grant(state, form):
    """Handle POST /token. `form` maps str -> str. Returns the success body or raises OAuthError."""
    grant_type = form.get("grant_type")
    if grant_type != JWT_BEARER:
        raise OAuthError(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type or ''}")
    assertion = form.get("assertion") or ""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise OAuthError(400, "invalid_grant", "Invalid JWT: the assertion is not a signed JWT.")
    try:
        header = json.loads(_b64decode(parts[0]))
        claims = json.loads(_b64decode(parts[1]))
        signature = _b64decode(parts[2])
    except (ValueError, TypeError):
        raise OAuthError(400, "invalid_grant", "Invalid JWT: the assertion is not a signed JWT.") from None
    if not isinstance(claims, dict) or header.get("alg") != "RS256":
        raise OAuthError(400, "invalid_grant", MSG_SIGNATURE)

    account = state.service_accounts.get(claims.get("iss"))
    if account is None:
        raise OAuthError(400, "invalid_grant", MSG_ACCOUNT)
    public_key = serialization.load_pem_public_key(account.public_key_pem.encode())
    try:
        public_key.verify(signature, (parts[0] + "." + parts[1]).encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise OAuthError(400, "invalid_grant", MSG_SIGNATURE) from None

    if claims.get("aud") not in GOOGLE_TOKEN_AUDIENCES:
        raise OAuthError(400, "invalid_grant", MSG_AUDIENCE)

    # The assertion's times are checked against real time (the emulated clock offset only moves
    # expiry of what the emulator issues), so tests can advance the clock without breaking grants.
    now = time.time()
    iat, exp = claims.get("iat"), claims.get("exp")
    if (
        not isinstance(iat, (int, float)) or not isinstance(exp, (int, float))
        or exp <= iat or exp - iat > MAX_ASSERTION_LIFETIME
        or iat > now + CLOCK_SKEW or exp < now - CLOCK_SKEW
    ):
        raise OAuthError(400, "invalid_grant", MSG_LIFETIME)

    scopes = [s for s in str(claims.get("scope") or "").split() if s]
    if not scopes:
        raise OAuthError(400, "invalid_scope", MSG_SCOPE)

    subject = claims.get("sub")
    if subject is not None:
        subject = str(subject).lower()
        if subject not in state.users:
            raise OAuthError(400, "invalid_grant", MSG_SUBJECT)
        apply_due_delegations(state)
        granted = state.delegations.get(account.client_id, set())
        if not set(scopes) <= granted:
            raise OAuthError(401, "unauthorized_client", MSG_UNAUTHORIZED)
    return new_access_token(state, subject, scopes, account.client_id)


def apply_delegation(state, change):
    grant, client_id, scopes = change
    if grant:
        state.delegations.setdefault(client_id, set()).update(scopes)
    elif scopes:
        state.delegations.get(client_id, set()).difference_update(scopes)
    else:
        state.delegations.pop(client_id, None)


def apply_due_delegations(state):
    """Delegation changes made with a delay take effect once their moment has come (emulator clock)."""
    now = state.now()
    due = [item for item in state.pending_delegations if item[0] <= now]
    state.pending_delegations = [item for item in state.pending_delegations if item[0] > now]
    for _, change in sorted(due, key=lambda item: item[0]):
        apply_delegation(state, change)
