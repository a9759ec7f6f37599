"""The organization's Google Workspace connection: key files, secrets at rest, settings changes, the
connection test.

The settings page and the `configure-google` command both change the integration only through the
functions here, so they validate the same way and write the same audit entries. Each change validates
everything first and then commits once: bad input leaves the stored settings exactly as they were.

Secrets (the key file, its password, the private key) live in memory only as long as needed, are stored
only as Fernet tokens under the app's ENCRYPTION_KEY, and are never logged, rendered, audited or returned.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from flask import current_app, has_app_context
from pyasn1.codec.ber import decoder as ber_decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_modules import rfc5652, rfc7292, rfc8018
from sqlalchemy import delete, select

from portal import DEFAULTS
from portal.extensions import db
from portal.models import (
    AuditEntry,
    GoogleIntegration,
    Organization,
    User,
    normalize_email,
    utcnow,
)
from portal.sync.google import (
    TOKENS,
    CalendarClient,
    CalendarInfo,
    Endpoints,
    GoogleError,
    IntegrationError,
    SigningKey,
    TokenCache,
    error_for,
)
from portal.sync.models import SharedToken

log = logging.getLogger(__name__)

KEY_FILE_LIMIT = 64 * 1024  # Google's keys are 2-3 KB; anything near this is not a key
DEFAULT_P12_PASSWORD = "notasecret"  # what Google sets on every P12 key it issues
PASSWORD_LIMIT = 200
SERVICE_ACCOUNT_DOMAIN = ".gserviceaccount.com"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CLIENT_ID = re.compile(r"^\d{6,30}$")
# PFX ::= SEQUENCE { version INTEGER (3), authSafe ContentInfo { contentType pkcs7-data ... } }
_PKCS12_VERSION = b"\x02\x01\x03"
_PKCS7_DATA_OID = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01"
# Every password tried costs each of a P12's key derivations, and its file states their iteration counts:
# a 1.5 KB file asking for 2^31 rounds would hold a worker for minutes. Google's keys, like OpenSSL's default
# (PKCS12_DEFAULT_ITER), use 2048 per derivation; tools that choose more stay far below this total.
P12_MAX_ROUNDS = 600_000
_P12_MAX_NESTING = 4
# PKCS#5 v1.5 schemes and PKCS#12's own: both carry (salt, iterations)
_PBE_V1 = tuple(univ.ObjectIdentifier(f"1.2.840.113549.1.5.{n}") for n in (1, 3, 4, 6, 10, 11))


class SettingsError(ValueError):
    """Input the admin must correct: field name -> message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


# ---------------------------------------------------------------------------------------------------
# Key files


@dataclass(frozen=True)
class KeyFile:
    """What the portal understood of an uploaded key. The private key itself is never shown."""

    kind: str  # p12 | json
    private_key_pem: bytes = field(repr=False)
    key_id: str
    fingerprint: str
    jwt_key_id: str = ""
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    client_email: str = ""
    client_id: str = ""
    project_id: str = ""
    password: str | None = field(default=None, repr=False)  # the one that opened a P12, if not the default


def parse_key_file(data: bytes, password: str | None = None, *, stored_password: str | None = None) -> KeyFile:
    """Open a service-account key: Google's PKCS#12 (.p12) or JSON key file.

    A P12 is opened with `password` when given; else with the stored password, then Google's default.
    Raises SettingsError on `key_file` (not a key) or `key_password` (a key the password does not open).
    """
    if not data:
        raise SettingsError({"key_file": "Choose the key file Google gave you (a .p12 or .json file)."})
    if len(data) > KEY_FILE_LIMIT:
        raise SettingsError({"key_file": f"This file is {len(data) // 1024} KB; a service-account key is a "
                                         f"few KB (at most {KEY_FILE_LIMIT // 1024} KB accepted). "
                                         "Choose the .p12 or .json file Google gave you."})
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head == b"{":
        return _parse_json_key(data)
    if head == b"-":
        raise SettingsError({"key_file": "This is a PEM text file. Upload the .p12 or .json key file exactly "
                                         "as Google Cloud downloaded it."})
    if data[:1] == b"\x30":
        return _parse_p12(data, password, stored_password)
    raise SettingsError({"key_file": "This file is not a service-account key. Upload the .p12 (PKCS#12) or "
                                     ".json key file Google Cloud downloaded when you added a key to the "
                                     "service account."})


def _looks_like_pkcs12(data: bytes) -> bool:
    return _PKCS12_VERSION in data[:12] and _PKCS7_DATA_OID in data[:48]


class _Unreadable(ValueError):
    """The file's structure is not a PKCS#12 one the portal can read before opening it."""


def _p12_rounds(data: bytes) -> int:
    """The key-derivation rounds opening this P12 costs per password, read from its ASN.1 before any of it
    is derived. Raises _Unreadable for what is not PKCS#12 or uses a derivation whose cost cannot be read."""
    try:
        pfx, _ = ber_decoder.decode(data, asn1Spec=rfc7292.PFX())
        rounds = _mac_rounds(pfx["macData"]) if pfx["macData"].isValue else 0
        if pfx["authSafe"]["contentType"] != rfc5652.id_data:
            raise _Unreadable("a signed (public-key) PKCS#12 file")
        safes, _ = ber_decoder.decode(_octets(pfx["authSafe"]["content"]), asn1Spec=rfc7292.AuthenticatedSafe())
        for info in safes:
            if info["contentType"] == rfc5652.id_data:
                rounds += _bag_rounds(_octets(info["content"]), 0)
            elif info["contentType"] == rfc5652.id_encryptedData:
                encrypted, _ = ber_decoder.decode(info["content"], asn1Spec=rfc5652.EncryptedData())
                rounds += _pbe_rounds(encrypted["encryptedContentInfo"]["contentEncryptionAlgorithm"])
            else:
                raise _Unreadable("contents encrypted to a recipient")
    except (PyAsn1Error, TypeError, ValueError) as exc:
        raise _Unreadable(str(exc)) from None
    return rounds


def _octets(value) -> bytes:
    octets, _ = ber_decoder.decode(value, asn1Spec=univ.OctetString())
    return bytes(octets)


def _bag_rounds(data: bytes, depth: int) -> int:
    if depth > _P12_MAX_NESTING:
        raise _Unreadable("safe contents nested too deep")
    bags, _ = ber_decoder.decode(data, asn1Spec=rfc7292.SafeContents())
    rounds = 0
    for bag in bags:
        if bag["bagId"] == rfc7292.id_pkcs8ShroudedKeyBag:
            shrouded, _ = ber_decoder.decode(bag["bagValue"], asn1Spec=rfc7292.EncryptedPrivateKeyInfo())
            rounds += _pbe_rounds(shrouded["encryptionAlgorithm"])
        elif bag["bagId"] == rfc7292.id_safeContentsBag:
            rounds += _bag_rounds(bytes(bag["bagValue"]), depth + 1)
    return rounds


def _pbe_rounds(algorithm) -> int:
    oid = algorithm["algorithm"]
    if oid in _PBE_V1 or rfc7292.pkcs_12PbeIds.isPrefixOf(oid):
        params, _ = ber_decoder.decode(algorithm["parameters"], asn1Spec=rfc8018.PBEParameter())
        return int(params["iterationCount"])
    if oid == rfc8018.id_PBES2:
        params, _ = ber_decoder.decode(algorithm["parameters"], asn1Spec=rfc8018.PBES2_params())
        return _pbkdf2_rounds(params["keyDerivationFunc"])
    raise _Unreadable(f"encryption scheme {oid}")


def _pbkdf2_rounds(kdf) -> int:
    if kdf["algorithm"] != rfc8018.id_PBKDF2:  # scrypt and others: a cost the portal does not weigh
        raise _Unreadable(f"key derivation {kdf['algorithm']}")
    params, _ = ber_decoder.decode(kdf["parameters"], asn1Spec=rfc8018.PBKDF2_params())
    return int(params["iterationCount"])


def _mac_rounds(mac_data) -> int:
    algorithm = mac_data["mac"]["digestAlgorithm"]
    if algorithm["algorithm"] == rfc8018.id_PBMAC1:  # RFC 9579: the count is in its PBKDF2, not in MacData
        params, _ = ber_decoder.decode(algorithm["parameters"], asn1Spec=rfc8018.PBMAC1_params())
        return _pbkdf2_rounds(params["keyDerivationFunc"])
    return int(mac_data["iterations"])


def _check_p12_cost(data: bytes) -> None:
    try:
        rounds = _p12_rounds(data)
    except _Unreadable:
        raise SettingsError({"key_file": "This file is not a PKCS#12 key file (or it is damaged or uses an "
                                         "encryption Google's keys never use). Upload the .p12 file Google "
                                         "Cloud downloaded, unchanged."}) from None
    if rounds > P12_MAX_ROUNDS:
        raise SettingsError({"key_file": f"This P12 file asks for {rounds:,} key-derivation iterations to "
                                         f"open; at most {P12_MAX_ROUNDS:,} are accepted (Google's keys use a "
                                         "few thousand). Upload the .p12 file Google Cloud downloaded, "
                                         "unchanged, or its JSON key."})


def _load_p12(data: bytes, password: str):
    """cryptography's loader, only once the file's cost per password is known to be reasonable."""
    _check_p12_cost(data)
    return _open_p12(data, password)


# Opening a P12 runs in a child process that is stopped after P12_OPEN_SECONDS: the rounds read beforehand
# cannot include a key bag inside an encrypted safe (it is only readable once decrypted), so the time spent
# is bounded here, whatever the file holds. The child loads nothing of the portal.
_P12_CHILD = """
import sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
data = sys.stdin.buffer.read()
size = int.from_bytes(data[:4], "big")
try:
    key, cert, _ = pkcs12.load_key_and_certificates(data[4:4 + size], data[4 + size:])
except ValueError:
    sys.exit(3)
key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()) if key is not None else b""
cert_der = cert.public_bytes(serialization.Encoding.DER) if cert is not None else b""
sys.stdout.buffer.write(len(key_der).to_bytes(4, "big") + key_der + cert_der)
"""


def _open_p12(data: bytes, password: str):
    """(private key, certificate) of a P12; ValueError when the password does not open it (or it is damaged),
    SettingsError when opening it takes longer than P12_OPEN_SECONDS."""
    seconds = float((current_app.config if has_app_context() else DEFAULTS)["P12_OPEN_SECONDS"])
    try:
        done = subprocess.run([sys.executable, "-I", "-c", _P12_CHILD], capture_output=True, timeout=seconds,
                              input=len(data).to_bytes(4, "big") + data + password.encode(), check=False)
    except subprocess.TimeoutExpired:
        raise SettingsError({"key_file": f"This key file takes more than {seconds:g} seconds to open; Google's "
                                         "keys open at once. Upload the .p12 file Google Cloud downloaded, "
                                         "unchanged, or its JSON key."}) from None
    if done.returncode != 0:
        raise ValueError("the password does not open this file, or it is damaged")
    size = int.from_bytes(done.stdout[:4], "big")
    key_der, cert_der = done.stdout[4:4 + size], done.stdout[4 + size:]
    private_key = serialization.load_der_private_key(key_der, None) if key_der else None
    certificate = x509.load_der_x509_certificate(cert_der) if cert_der else None
    return private_key, certificate, []


def _parse_p12(data: bytes, password: str | None, stored_password: str | None) -> KeyFile:
    if password:
        candidates = [password]
    else:
        candidates = [p for p in (stored_password, DEFAULT_P12_PASSWORD) if p]
    if _looks_like_pkcs12(data):
        _check_p12_cost(data)
    for candidate in candidates:
        try:
            private_key, certificate, _ = _open_p12(data, candidate)
        except SettingsError:
            raise  # too slow to open: no other password would be any quicker
        except ValueError:
            continue
        break
    else:
        if not _looks_like_pkcs12(data):
            raise SettingsError({"key_file": "This file is not a PKCS#12 key file (or it is damaged). Upload "
                                             "the .p12 file Google Cloud downloaded, unchanged."})
        if password:
            raise SettingsError({"key_password": "This password does not open the key file. Enter the private "
                                                 "key password Google showed when it created the key "
                                                 f"(“{DEFAULT_P12_PASSWORD}” unless it was changed)."})
        raise SettingsError({"key_password": "The key file is protected by a password other than Google's "
                                             f"default “{DEFAULT_P12_PASSWORD}”. Enter its password in "
                                             "“Private key password” and upload the file again."})
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise SettingsError({"key_file": "The key file holds no RSA private key; Google's service-account "
                                         "keys always do. Upload the file Google Cloud downloaded."})
    client_id = ""
    valid_from = valid_until = None
    key_id = ""
    if certificate is not None:
        valid_from, valid_until = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        key_id = certificate.fingerprint(hashes.SHA1()).hex()  # noqa: S324 - an identifier, as Google shows it
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = str(names[0].value) if names else ""
        if _CLIENT_ID.match(common_name):
            client_id = common_name
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    used = candidate if candidate != DEFAULT_P12_PASSWORD or password else None
    return KeyFile(kind="p12", private_key_pem=pem, key_id=key_id or _fingerprint(private_key)[:23],
                   fingerprint=_fingerprint(private_key), valid_from=valid_from, valid_until=valid_until,
                   client_id=client_id, password=used)


def _parse_json_key(data: bytes) -> KeyFile:
    not_a_key = ("This JSON file is not a service-account key. In Google Cloud console > IAM & Admin > "
                 "Service accounts > (the account) > Keys > Add key, choose JSON (or P12) and upload the "
                 "downloaded file.")
    try:
        info = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        raise SettingsError({"key_file": "This file is not valid JSON, so it cannot be a JSON key file. "
                                         "Upload the .json or .p12 file Google gave you, unchanged."}) from None
    if not isinstance(info, dict):
        raise SettingsError({"key_file": not_a_key})
    if "installed" in info or "web" in info:
        raise SettingsError({"key_file": "This is an OAuth client ID file, not a service-account key. " + not_a_key})
    if info.get("type") != "service_account" or not isinstance(info.get("private_key"), str):
        raise SettingsError({"key_file": not_a_key})
    email = normalize_email(str(info.get("client_email") or ""))
    if not _EMAIL.match(email):
        raise SettingsError({"key_file": "The JSON key has no valid client_email; download the key again."})
    try:
        private_key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        raise SettingsError({"key_file": "The JSON key's private_key cannot be read; the file was changed or "
                                         "damaged. Download a new key from Google Cloud."}) from None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise SettingsError({"key_file": "The JSON key's private key is not an RSA key; download a new key "
                                         "from Google Cloud."})
    client_id = str(info.get("client_id") or "")
    key_id = str(info.get("private_key_id") or "")[:64]
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    return KeyFile(kind="json", private_key_pem=pem, key_id=key_id or _fingerprint(private_key)[:23],
                   jwt_key_id=key_id, fingerprint=_fingerprint(private_key), client_email=email,
                   client_id=client_id if _CLIENT_ID.match(client_id) else "",
                   project_id=str(info.get("project_id") or "")[:100])


def _fingerprint(private_key: rsa.RSAPrivateKey) -> str:
    """SHA-256 of the public key: the same for a key whatever file format it came in."""
    der = private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


# ---------------------------------------------------------------------------------------------------
# Secrets at rest


def encryption_keys(value: str | None = None) -> list[str]:
    """ENCRYPTION_KEY as a list: the first key encrypts; every key listed decrypts (the old ones during a
    rotation)."""
    value = current_app.config["ENCRYPTION_KEY"] if value is None else value
    return [key for key in value.replace("\n", ",").split(",") if key.strip()] if value else []


def _fernet(value: str | None = None) -> MultiFernet:
    return MultiFernet([Fernet(key.strip()) for key in encryption_keys(value)])


def encrypt(secret: bytes) -> str:
    return _fernet().encrypt(secret).decode("ascii")


def decrypt(token: str) -> bytes:
    """The secret; a token from none of ENCRYPTION_KEY's keys (or a tampered one) raises InvalidToken."""
    return _fernet().decrypt(token.encode("ascii"))


class RotationError(RuntimeError):
    """A stored secret that none of the configured keys decrypts: the rotation stops, nothing changed."""


# Every Fernet token the portal stores, besides the shared access tokens (a cache, dropped by a rotation).
SECRET_COLUMNS = ("key_ciphertext", "password_ciphertext")


def rotate_secrets(keys: list[str]) -> int:
    """Re-encrypt every stored secret under keys[0] (any listed key may decrypt it); returns how many.

    Changes the session only: the caller commits once, so either every secret moves or none does.
    """
    multi = _fernet(",".join(keys))
    count = 0
    rows = db.session.scalars(select(GoogleIntegration).order_by(GoogleIntegration.id).with_for_update())
    for row in rows:
        for column in SECRET_COLUMNS:
            token = getattr(row, column)
            if token is None:
                continue
            try:
                setattr(row, column, multi.rotate(token.encode("ascii")).decode("ascii"))
            except InvalidToken:
                what = "private key" if column == "key_ciphertext" else "key password"
                raise RotationError(f"The Google {what} stored for {row.organization.name} is encrypted with a "
                                    "key that is not in ENCRYPTION_KEY. List that key too, or have that "
                                    "organization's admin upload its key again.") from None
            count += 1
    # The access tokens the workers share are only a cache: dropped rather than re-encrypted.
    db.session.execute(delete(SharedToken))
    return count


def _stored_password(row: GoogleIntegration) -> str | None:
    if row.password_ciphertext is None:
        return None
    try:
        return decrypt(row.password_ciphertext).decode("utf-8")
    except InvalidToken:
        return None


def signing_key(row: GoogleIntegration) -> SigningKey:
    """The stored key, decrypted and opened for signing token requests.

    Raises IntegrationError (`not_configured`, `key_unreadable`) when there is nothing usable stored.
    """
    if not row.service_account_email or row.key_ciphertext is None:
        missing = "no service account e-mail" if not row.service_account_email else "no private key uploaded"
        raise error_for("not_configured", detail=missing + ".")
    key = _opened_key(row.key_ciphertext, row.password_ciphertext, current_app.config["ENCRYPTION_KEY"])
    return SigningKey(service_account_email=row.service_account_email, private_key_pem=key.private_key_pem,
                      key_id=row.key_id, jwt_key_id=key.jwt_key_id, fingerprint=row.key_fingerprint,
                      client_id=row.client_id, project_id=row.project_id)


@functools.lru_cache(maxsize=64)
def _opened_key(key_ciphertext: str, password_ciphertext: str | None, encryption_key: str) -> KeyFile:
    """Decrypt and open a stored key once per process, not once per sync cycle (opening a P12 is slow)."""
    fernet = _fernet(encryption_key)
    try:
        data = fernet.decrypt(key_ciphertext.encode("ascii"))
        password = fernet.decrypt(password_ciphertext.encode("ascii")).decode("utf-8") if password_ciphertext else None
    except InvalidToken:
        raise error_for("key_unreadable", detail="the portal's encryption key (ENCRYPTION_KEY) changed since "
                                                 "it was stored.") from None
    try:
        return parse_key_file(data, stored_password=password)
    except SettingsError as exc:
        raise error_for("key_unreadable", detail=str(exc)) from None


def endpoints() -> Endpoints:
    return Endpoints.from_config(current_app.config)


def calendar_client(row: GoogleIntegration, email: str) -> CalendarClient:
    """A Calendar client acting as `email` with the organization's stored key."""
    return CalendarClient(signing_key(row), email, endpoints())


def delegation_scopes() -> str:
    """The scopes exactly as the Workspace Admin console wants them: comma-separated, no spaces."""
    return ",".join(endpoints().scopes)


# ---------------------------------------------------------------------------------------------------
# Settings changes


def audit(organization: Organization, actor: User | None, action: str, **details) -> AuditEntry:
    """Record a settings change. Callers pass only non-secret values."""
    entry = AuditEntry(organization_id=organization.id, user_id=actor.id if actor else None, action=action,
                       details=details, at=utcnow())
    db.session.add(entry)
    # The log carries what the audit log carries, for operators who read logs rather than pages.
    log.info("google calendar settings of organization %s: %s by %s %s", organization.id, action,
             actor.email if actor else "operator", json.dumps(details, default=str, sort_keys=True))
    return entry


AUDIT_PAGE_SIZE = 20


@dataclass(frozen=True)
class AuditPage:
    """One page of the settings' audit log, newest first."""

    entries: list[AuditEntry]
    number: int
    has_older: bool


def audit_page(organization: Organization, number: int = 1, size: int = AUDIT_PAGE_SIZE) -> AuditPage:
    number = max(1, min(number, 1_000_000))
    rows = list(db.session.scalars(
        select(AuditEntry).where(AuditEntry.organization_id == organization.id)
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).offset((number - 1) * size).limit(size + 1)
    ))
    return AuditPage(entries=rows[:size], number=number, has_older=len(rows) > size)


def recent_audit(organization: Organization, limit: int = AUDIT_PAGE_SIZE) -> list[AuditEntry]:
    return audit_page(organization, 1, limit).entries


# Why a test failed, in a few words for a log line (the page shows the full cause and fix when it happens).
_FAILURE_WORDS = {
    "invalid_jwt_signature": "Google refused the private key",
    "service_account_not_found": "Google does not know the service account",
    "delegation_missing": "domain-wide delegation missing",
    "scopes_insufficient": "Calendar permission missing from the delegation",
    "invalid_scope": "Google refused the scopes asked for",
    "clock_skew": "the server's clock is wrong",
    "token_refused": "Google refused to issue a token",
    "token_rejected": "Google rejected the token",
    "api_not_enabled": "Calendar API not enabled",
    "key_unreadable": "the stored key cannot be opened",
    "not_configured": "not set up yet",
    "unknown_user": "not a user of the Google Workspace",
    "calendar_not_found": "calendar not found",
    "calendar_forbidden": "Google refused access to the calendar",
    "unreachable": "Google could not be reached",
    "timeout": "Google did not answer in time",
    "rate_limited": "Google asked the portal to slow down",
    "google_unavailable": "Google had a temporary problem",
}


def failure_words(code: str | None) -> str:
    return _FAILURE_WORDS.get(code or "", "Google answered with an unexpected error")


def short_fingerprint(fingerprint: str | None) -> str:
    """Enough of a fingerprint to tell keys apart in a log line; the whole one is shown with the key."""
    return f"{fingerprint[:14]}…" if fingerprint and len(fingerprint) > 14 else (fingerprint or "")


def _change(what: str, pair) -> str:
    old, new = (list(pair) + [None, None])[:2] if isinstance(pair, list | tuple) else (None, pair)
    if not new:
        return f"{what} cleared"
    if not old:
        return f"{what} set to {new}"
    return f"{what} changed from {old} to {new}"


def describe_audit(entry: AuditEntry) -> str:
    """An audit entry in words, from its non-secret details."""
    d = entry.details or {}
    action = entry.action
    if action == "service_account_changed":
        parts = [_change("Service account", d["service_account_email"])] if "service_account_email" in d else []
        if "client_id" in d:
            parts.append(_change("Client ID", d["client_id"]))
        return "; ".join(parts) or "Service account saved"
    if action == "key_uploaded":
        kind = "JSON key" if d.get("kind") == "json" else "P12 key"
        fingerprint = short_fingerprint(d.get("fingerprint"))
        text = (f"Key replaced (fingerprint {fingerprint}; it was {short_fingerprint(d['replaced_fingerprint'])})"
                if d.get("replaced_fingerprint") else f"{kind} uploaded (fingerprint {fingerprint})")
        if d.get("service_account_email"):
            text += "; " + _change("service account", d["service_account_email"])
        if d.get("password_set"):
            text += "; it has its own password"
        return text
    if action == "key_password_changed":
        if not d.get("is_set"):
            return "Private key password cleared (Google's default is used)"
        return "Private key password changed" if d.get("was_set") else "Private key password set"
    if action == "activity_types_changed":
        parts = []
        if d.get("added"):
            parts.append("now synced: " + ", ".join(d["added"]))
        if d.get("removed"):
            parts.append("no longer synced: " + ", ".join(d["removed"]))
        return ("Activity types " + "; ".join(parts)) if parts else "Activity types saved"
    if action == "connection_tested":
        result = "passed" if d.get("ok") else f"failed ({failure_words(d.get('error'))})"
        return f"Connection test as {d.get('email', 'an unknown user')}: {result}"
    if action == "integration_enabled":
        return f"Switched on after a passing connection test as {d.get('tested_as', 'an unknown user')}"
    if action == "integration_disabled":
        return "Switched off"
    if action == "integration_enable_refused":
        return (f"Switching on refused: the connection test as {d.get('tested_as', 'an unknown user')} failed "
                f"({failure_words(d.get('error'))})")
    if action == "participants_can_edit_changed":
        return ("Participants may now change the activities they take part in" if d.get("participants_can_edit")
                else "Only owners and admins change activities now")
    return "Settings changed"


def clean_email(value: str | None, field_name: str = "test_email") -> str:
    email = normalize_email(value)
    if not email:
        raise SettingsError({field_name: "Enter an e-mail address."})
    if len(email) > 254 or not _EMAIL.match(email):
        raise SettingsError({field_name: f"“{email[:80]}” is not an e-mail address."})
    return email


def save_account(row: GoogleIntegration, actor: User | None, email: str | None, client_id: str | None, *,
                 commit: bool = True) -> bool:
    """Set the service account e-mail and client ID; returns whether anything changed."""
    errors: dict[str, str] = {}
    email = normalize_email(email)
    client_id = (client_id or "").strip()
    if not email:
        errors["service_account_email"] = "Enter the service account's e-mail address."
    elif len(email) > 254 or not _EMAIL.match(email):
        errors["service_account_email"] = f"“{email[:80]}” is not an e-mail address."
    elif not email.endswith(SERVICE_ACCOUNT_DOMAIN):
        errors["service_account_email"] = (
            "This is not a service account's address: those end in “.gserviceaccount.com”, e.g. "
            "portal-sync@your-project.iam.gserviceaccount.com. Copy it from Google Cloud console > "
            "IAM & Admin > Service accounts (not your own Workspace address).")
    elif row.key_kind == "json" and row.has_key and email != row.service_account_email:
        errors["service_account_email"] = (
            f"The stored JSON key belongs to {row.service_account_email}. To switch to another service "
            "account, upload that account's key: its e-mail is taken from the key.")
    if client_id and not _CLIENT_ID.match(client_id):
        errors["client_id"] = ("The client ID is the service account's numeric “Unique ID” (e.g. "
                               "110234567890123456789), shown in Google Cloud console on the account's page.")
    if errors:
        raise SettingsError(errors)
    changes = {}
    if email != row.service_account_email:
        changes["service_account_email"] = [row.service_account_email or None, email]
    if client_id != row.client_id:
        changes["client_id"] = [row.client_id or None, client_id or None]
    if not changes:
        return False
    row.service_account_email, row.client_id = email, client_id
    row.settings_changed()
    audit(row.organization, actor, "service_account_changed", **changes)
    TOKENS.forget(fingerprint=row.key_fingerprint)
    if commit:
        db.session.commit()
    log.info("Google integration of organization %s: service account settings changed", row.organization_id)
    return True


def upload_key(row: GoogleIntegration, actor: User | None, data: bytes, password: str | None = None, *,
               commit: bool = True) -> KeyFile:
    """Replace the stored key with `data`, but only once it opens; returns what was understood."""
    if password is not None and len(password) > PASSWORD_LIMIT:
        raise SettingsError({"key_password": f"The password may have at most {PASSWORD_LIMIT} characters."})
    key = parse_key_file(data, password or None, stored_password=_stored_password(row))
    details = {"kind": key.kind, "key_id": key.key_id, "fingerprint": key.fingerprint,
               "replaced_fingerprint": row.key_fingerprint or None}
    if key.kind == "json":
        if key.client_email != row.service_account_email:
            details["service_account_email"] = [row.service_account_email or None, key.client_email]
        row.service_account_email = key.client_email
        row.client_id = key.client_id or row.client_id
        row.project_id = key.project_id
        row.password_ciphertext = None  # JSON keys have no password
    else:
        row.client_id = row.client_id or key.client_id
        row.project_id = ""
        # Written with the key, always: a password left from before could be under another encryption key.
        row.password_ciphertext = encrypt(key.password.encode("utf-8")) if key.password is not None else None
        details["password_set"] = row.has_password
    old_fingerprint = row.key_fingerprint
    row.key_kind = key.kind
    row.key_ciphertext = encrypt(data)
    row.key_id, row.key_fingerprint = key.key_id, key.fingerprint
    row.key_valid_from, row.key_valid_until = key.valid_from, key.valid_until
    row.key_uploaded_at = utcnow()
    row.settings_changed()
    audit(row.organization, actor, "key_uploaded", **details)
    TOKENS.forget(fingerprint=old_fingerprint)  # before the commit: the shared tokens go with it
    if commit:
        db.session.commit()
    log.info("Google integration of organization %s: new %s key %s stored", row.organization_id, key.kind,
             key.fingerprint)
    return key


def set_password(row: GoogleIntegration, actor: User | None, password: str | None, *, commit: bool = True) -> None:
    """Change the P12 key's password; with a key stored, only to one that opens it. Empty clears it."""
    password = password or ""
    if len(password) > PASSWORD_LIMIT:
        raise SettingsError({"key_password": f"The password may have at most {PASSWORD_LIMIT} characters."})
    if row.key_kind == "json" and row.has_key:
        raise SettingsError({"key_password": "The stored key is a JSON key, which has no password."})
    if row.has_key and row.key_kind == "p12":
        try:
            data = decrypt(row.key_ciphertext)
        except InvalidToken:
            # A password stored now would sit under another key than the key file it belongs to.
            raise SettingsError({"key_password": "The stored key file cannot be decrypted with the portal's "
                                                 "encryption key (ENCRYPTION_KEY changed since it was stored). "
                                                 "Upload the key file again, with its password."}) from None
        try:
            _load_p12(data, password or DEFAULT_P12_PASSWORD)
        except ValueError:
            raise SettingsError({"key_password": (
                "This password does not open the stored key file." if password else
                f"The stored key file needs a password; Google's default “{DEFAULT_P12_PASSWORD}” does "
                "not open it.")}) from None
    was_set = row.has_password
    row.password_ciphertext = encrypt(password.encode("utf-8")) if password else None
    row.settings_changed()
    audit(row.organization, actor, "key_password_changed", was_set=was_set, is_set=bool(password))
    TOKENS.forget(fingerprint=row.key_fingerprint)  # before the commit: the shared tokens go with it
    if commit:
        db.session.commit()
    log.info("Google integration of organization %s: key password %s", row.organization_id,
             "changed" if password else "cleared")


def save_activity_types(organization: Organization, actor: User | None, selected: Iterable, *,
                        commit: bool = True) -> bool:
    """Mark which activity types sync to Google (by id or name); returns whether anything changed."""
    by_id = {str(t.id): t for t in organization.activity_types}
    by_name = {t.name.lower(): t for t in organization.activity_types}
    chosen, unknown = set(), []
    for value in selected:
        value = str(value).strip()
        if not value:
            continue
        activity_type = by_id.get(value) or by_name.get(value.lower())
        if activity_type is None:
            unknown.append(value[:60])
        else:
            chosen.add(activity_type.id)
    if unknown:
        known = ", ".join(t.name for t in organization.activity_types)
        raise SettingsError({"activity_types": f"Unknown activity type(s): {', '.join(unknown)}. "
                                               f"This organization has: {known}."})
    added = [t.name for t in organization.activity_types if t.id in chosen and not t.sync_to_google]
    removed = [t.name for t in organization.activity_types if t.id not in chosen and t.sync_to_google]
    if not added and not removed:
        return False
    for activity_type in organization.activity_types:
        activity_type.sync_to_google = activity_type.id in chosen
    audit(organization, actor, "activity_types_changed", added=added, removed=removed)
    if commit:
        db.session.commit()
    return True


@dataclass
class TestOutcome:
    """The result of a connection test: the calendar read, or the classified error."""

    email: str
    calendar: CalendarInfo | None = None
    error: GoogleError | None = None
    at: datetime = field(default_factory=utcnow)
    scopes: tuple[str, ...] = ()  # what the delegation granted and the portal uses
    preferred_scopes: tuple[str, ...] = ()

    @property
    def broader_than_needed(self) -> bool:
        return bool(self.scopes) and self.scopes != self.preferred_scopes

    @property
    def ok(self) -> bool:
        return self.error is None


def test_connection(row: GoogleIntegration, actor: User | None, email: str) -> TestOutcome:
    """Obtain a token as `email` and read that user's primary calendar.

    An integration-level failure becomes the organization's error banner; a success clears it.
    """
    email = clean_email(email)
    outcome = _run_test(row, email)
    _record_test(row, outcome)
    audit(row.organization, actor, "connection_tested", email=email, ok=outcome.ok,
          error=outcome.error.code if outcome.error else None)
    db.session.commit()
    return outcome


def _run_test(row: GoogleIntegration, email: str) -> TestOutcome:
    # A cache of its own: a token the sync obtained before the delegation was revoked stays valid for up to
    # an hour, and a test that reused it would pass while every new token request fails.
    tokens = TokenCache()
    where = endpoints()
    try:
        key = signing_key(row)
        calendar = CalendarClient(key, email, where, tokens=tokens).read_primary_calendar()
    except GoogleError as exc:
        log.info("Google connection test of organization %s as %s failed: %s (%s)", row.organization_id,
                 email, exc.code, exc.detail)
        if isinstance(exc, IntegrationError) and row.key_fingerprint:
            # What the sync holds was obtained before Google stopped agreeing: it must ask again too.
            TOKENS.forget(fingerprint=row.key_fingerprint)
        return TestOutcome(email=email, error=exc)
    return TestOutcome(email=email, calendar=calendar, scopes=tokens.scopes_in_use(key, where) or (),
                       preferred_scopes=where.scopes)


def _record_test(row: GoogleIntegration, outcome: TestOutcome) -> None:
    row.last_test_at, row.last_test_email, row.last_test_ok = outcome.at, outcome.email, outcome.ok
    if outcome.ok:
        row.clear_error()
    elif isinstance(outcome.error, IntegrationError) and outcome.error.code != "not_configured":
        row.record_error(outcome.error.code, outcome.error.cause, outcome.error.fix)


def set_enabled(row: GoogleIntegration, actor: User | None, enabled: bool, test_email: str | None = None
                ) -> TestOutcome | None:
    """Switch the integration on (only after a passing connection test) or off (at once).

    Returns the test's outcome when switching on: when it failed the integration stays off.
    """
    if not enabled:
        if row.enabled:
            row.enabled = False
            row.settings_changed()
            audit(row.organization, actor, "integration_disabled")
            TOKENS.forget(fingerprint=row.key_fingerprint)  # before the commit: the shared tokens go with it
            db.session.commit()
            log.info("Google integration of organization %s switched off", row.organization_id)
        return None
    email = clean_email(test_email or (actor.email if actor else ""))
    if not row.is_configured:
        missing = []
        if not row.service_account_email:
            missing.append("the service account e-mail")
        if not row.has_key:
            missing.append("the private key file")
        raise SettingsError({"enabled": f"Enter {' and '.join(missing)} first; then switch the integration on."})
    outcome = _run_test(row, email)
    _record_test(row, outcome)
    if outcome.ok:
        row.enabled = True
        row.settings_changed()
        audit(row.organization, actor, "integration_enabled", tested_as=email)
        log.info("Google integration of organization %s switched on", row.organization_id)
    else:
        row.enabled = False
        audit(row.organization, actor, "integration_enable_refused", tested_as=email, error=outcome.error.code)
    db.session.commit()
    return outcome


def integration_for(organization: Organization) -> GoogleIntegration:
    return GoogleIntegration.for_organization(organization)
