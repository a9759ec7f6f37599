"""Secrets at rest: crafted PKCS#12 files are refused before they are opened, the instance folder is the
owner's alone, and the encryption key can be rotated all at once."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from pyasn1.codec.ber import decoder
from pyasn1.codec.der import encoder
from pyasn1.type import univ
from pyasn1_modules import rfc5652, rfc7292, rfc8018
from sqlalchemy import select

from portal import create_app
from portal.extensions import db
from portal.integration import SettingsError, parse_key_file, set_password, upload_key
from portal.models import GoogleIntegration, Organization
from tests.test_settings_page import make_p12

OLD_KEY = "hYDDs2tKQ-6jSuX4rrNQNlQhX3DOXVkIOCMUDldOZFc="  # the tests' ENCRYPTION_KEY (conftest)
HUGE = 2**31 - 1


# ---------------------------------------------------------------------------------------------------
# Crafted PKCS#12 files


def with_mac_iterations(data: bytes, iterations: int) -> bytes:
    pfx, _ = decoder.decode(data, asn1Spec=rfc7292.PFX())
    pfx["macData"]["iterations"] = iterations
    return encoder.encode(pfx)


def with_key_bag_iterations(data: bytes, iterations: int) -> bytes:
    """The shrouded key bag's PBKDF2 iteration count changed (the MAC no longer matches: never reached)."""
    pfx, _ = decoder.decode(data, asn1Spec=rfc7292.PFX())
    content, _ = decoder.decode(pfx["authSafe"]["content"], asn1Spec=univ.OctetString())
    safes, _ = decoder.decode(content, asn1Spec=rfc7292.AuthenticatedSafe())
    for index, info in enumerate(safes):
        if info["contentType"] != rfc5652.id_data:
            continue
        inner, _ = decoder.decode(info["content"], asn1Spec=univ.OctetString())
        bags, _ = decoder.decode(inner, asn1Spec=rfc7292.SafeContents())
        for bag in bags:
            if bag["bagId"] != rfc7292.id_pkcs8ShroudedKeyBag:
                continue
            shrouded, _ = decoder.decode(bag["bagValue"], asn1Spec=rfc7292.EncryptedPrivateKeyInfo())
            algorithm = shrouded["encryptionAlgorithm"]
            params, _ = decoder.decode(algorithm["parameters"], asn1Spec=rfc8018.PBES2_params())
            kdf, _ = decoder.decode(params["keyDerivationFunc"]["parameters"], asn1Spec=rfc8018.PBKDF2_params())
            kdf["iterationCount"] = iterations
            params["keyDerivationFunc"]["parameters"] = encoder.encode(kdf)
            algorithm["parameters"] = encoder.encode(params)
            bag["bagValue"] = encoder.encode(shrouded)
        info["content"] = encoder.encode(univ.OctetString(encoder.encode(bags)))
        safes[index] = info
    pfx["authSafe"]["content"] = encoder.encode(univ.OctetString(encoder.encode(safes)))
    return encoder.encode(pfx)


def asked_rounds(message: str) -> int:
    """The count the refusal names: only the ASN.1 pre-check knows it, so no password was tried."""
    found = re.search(r"asks for ([\d,]+) key-derivation iterations", message)
    assert found, message
    return int(found.group(1).replace(",", ""))


def test_a_p12_with_a_huge_mac_iteration_count_is_refused_before_it_is_opened():
    crafted = with_mac_iterations(make_p12(), HUGE)
    assert len(crafted) < 4096
    with pytest.raises(SettingsError) as refused:
        parse_key_file(crafted)
    assert asked_rounds(refused.value.errors["key_file"]) >= HUGE


def test_a_p12_with_a_huge_key_bag_iteration_count_is_refused_before_it_is_opened():
    with pytest.raises(SettingsError) as refused:
        parse_key_file(with_key_bag_iterations(make_p12(), HUGE))
    assert asked_rounds(refused.value.errors["key_file"]) >= HUGE


def test_a_crafted_p12_upload_answers_422_and_keeps_nothing(app, login_as, world):
    from tests.test_settings_page import PAGE, SA_EMAIL, upload

    client = login_as("admin")
    client.post(PAGE + "/account", data={"service_account_email": SA_EMAIL})
    response = upload(client, with_mac_iterations(make_p12(), HUGE))
    assert response.status_code == 422
    assert "iteration" in response.get_data(as_text=True)
    with app.app_context():
        row = db.session.scalar(select(GoogleIntegration).where(GoogleIntegration.organization_id == world["acme"]))
        assert row.key_ciphertext is None


def test_opening_a_p12_is_cut_off_after_its_time_limit(app):
    """Whatever the rounds read beforehand missed (a key bag inside an encrypted safe), opening stops in time."""
    app.config["P12_OPEN_SECONDS"] = 0.001
    with app.app_context(), pytest.raises(SettingsError) as refused:
        parse_key_file(make_p12())
    assert "takes more than" in refused.value.errors["key_file"]
    app.config["P12_OPEN_SECONDS"] = 10
    with app.app_context():
        assert parse_key_file(make_p12()).kind == "p12"


def test_ordinary_iteration_counts_still_open():
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    private_key, certificate, _ = pkcs12.load_key_and_certificates(make_p12(), b"notasecret")
    # What Google and OpenSSL use (2048), and a cautious tool's choice well above it.
    for rounds in (2048, 100_000):
        encryption = (serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(rounds)
                      .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(hashes.SHA256())
                      .build(b"notasecret"))
        data = pkcs12.serialize_key_and_certificates(b"k", private_key, certificate, None, encryption)
        assert parse_key_file(data).kind == "p12"


def test_a_damaged_p12_is_still_called_damaged_not_crafted():
    data = make_p12()
    with pytest.raises(SettingsError) as refused:
        parse_key_file(data[: len(data) // 2])
    assert "damaged" in refused.value.errors["key_file"]


# ---------------------------------------------------------------------------------------------------
# The instance folder


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_instance_files_are_the_owners_alone(tmp_path):
    instance = tmp_path / "instance"
    app = create_app({"TESTING": True}, instance_path=str(instance))
    with app.app_context():
        db.create_all()
        db.engine.dispose()
    assert mode(instance) == 0o700
    for name in ("secret_key", "encryption_key", "portal.sqlite"):
        assert mode(instance / name) == 0o600, name


def test_the_demo_emulator_state_is_the_owners_alone(tmp_path):
    from portal.sync.demo import start_embedded_google

    state = tmp_path / "google-emulator.sqlite"
    app = create_app({"TESTING": True, "SECRET_KEY": "x", "ENCRYPTION_KEY": OLD_KEY,
                      "SQLALCHEMY_DATABASE_URI": "sqlite:///" + str(tmp_path / "p.sqlite"),
                      "GOOGLE_EMULATOR_STATE": str(state)})
    server = start_embedded_google(app, "127.0.0.1", 0)
    try:
        assert mode(state) == 0o600
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------
# Rotating the encryption key


def connect(app, world, names=("acme", "globex")) -> None:
    """Store a password-protected P12 for each named organization (password and key both encrypted)."""
    with app.app_context():
        for name in names:
            row = GoogleIntegration.for_organization(db.session.get(Organization, world[name]))
            upload_key(row, None, make_p12("s3cret-pass"), "s3cret-pass")


def stored(app) -> list[tuple[str, str | None]]:
    with app.app_context():
        rows = db.session.scalars(select(GoogleIntegration).order_by(GoogleIntegration.id)).all()
        return [(r.key_ciphertext, r.password_ciphertext) for r in rows if r.key_ciphertext]


def opens_under(key: str, secrets: list[tuple[str, str | None]]) -> bool:
    fernet = Fernet(key)
    try:
        for key_token, password_token in secrets:
            fernet.decrypt(key_token)
            if password_token:
                fernet.decrypt(password_token)
    except InvalidToken:
        return False
    return True


@pytest.fixture
def key_file_app(tmp_path, empty_database):
    """An app whose encryption key lives in its instance folder, as without PORTAL_ENCRYPTION_KEY."""
    import shutil

    from tests.conftest import FAST_HASH

    instance = tmp_path / "instance"
    instance.mkdir(mode=0o700)
    (instance / "encryption_key").write_text(OLD_KEY)
    shutil.copyfile(empty_database, tmp_path / "portal.sqlite")
    app = create_app({"TESTING": True, "SECRET_KEY": "x", "PASSWORD_HASH_METHOD": FAST_HASH,
                      "SQLALCHEMY_DATABASE_URI": "sqlite:///" + str(tmp_path / "portal.sqlite")},
                     instance_path=str(instance))
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def key_file_world(key_file_app):
    from portal.accounts import add_organization

    with key_file_app.app_context():
        organizations = {"acme": add_organization("Acme"), "globex": add_organization("Globex"),
                         "initech": add_organization("Initech")}
        db.session.commit()
        return {name: organization.id for name, organization in organizations.items()}


def test_rotation_re_encrypts_every_secret_and_keeps_the_keys_working(key_file_app, key_file_world):
    app = key_file_app
    connect(app, key_file_world)
    before = stored(app)
    result = app.test_cli_runner().invoke(args=["rotate-encryption-key"])
    assert result.exit_code == 0, result.output
    assert "4 secrets" in result.output
    new_key = (Path(app.instance_path) / "encryption_key").read_text().strip()
    assert new_key != OLD_KEY and new_key not in result.output
    assert mode(Path(app.instance_path) / "encryption_key") == 0o600
    after = stored(app)
    assert all(a[0] != b[0] and a[1] != b[1] for a, b in zip(after, before, strict=True))
    assert opens_under(new_key, after) and not opens_under(OLD_KEY, after)
    # A portal started afterwards reads the new key, and the stored P12 still opens with its password.
    fresh = create_app({"TESTING": True, "SECRET_KEY": "x",
                        "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"]},
                       instance_path=app.instance_path)
    with fresh.app_context():
        from portal.integration import signing_key

        row = db.session.scalar(select(GoogleIntegration).where(GoogleIntegration.organization_id
                                                                == key_file_world["acme"]))
        row.service_account_email = "a@b.iam.gserviceaccount.com"
        assert b"PRIVATE KEY" in signing_key(row).private_key_pem
        db.session.rollback()
        db.engine.dispose()


def test_a_failed_rotation_leaves_every_secret_under_the_old_key(key_file_app, key_file_world):
    app = key_file_app
    connect(app, key_file_world)
    with app.app_context():  # a third organization's key was stored under a key nobody has any more
        row = GoogleIntegration.for_organization(db.session.get(Organization, key_file_world["initech"]))
        row.key_kind = "p12"
        row.key_ciphertext = Fernet(Fernet.generate_key()).encrypt(make_p12()).decode()
        db.session.commit()
    before = stored(app)
    result = app.test_cli_runner().invoke(args=["rotate-encryption-key"])
    assert result.exit_code != 0
    assert "Initech" in result.output and "nothing was changed" in result.output.lower()
    assert stored(app) == before
    assert opens_under(OLD_KEY, before[:2])
    assert (Path(app.instance_path) / "encryption_key").read_text().strip() == OLD_KEY


def test_old_keys_listed_after_the_new_one_still_decrypt_until_rotated(app, world):
    connect(app, world)
    new_key = Fernet.generate_key().decode()
    app.config["ENCRYPTION_KEY"] = f"{new_key},{OLD_KEY}"
    result = app.test_cli_runner().invoke(args=["rotate-encryption-key"])
    assert result.exit_code == 0, result.output
    assert opens_under(new_key, stored(app)) and not opens_under(OLD_KEY, stored(app))
    assert "remove the old key" in result.output.lower()


def test_rotation_from_a_configured_single_key_explains_what_to_set(app, world):
    connect(app, world)
    before = stored(app)
    result = app.test_cli_runner().invoke(args=["rotate-encryption-key"])
    assert result.exit_code != 0
    assert "PORTAL_ENCRYPTION_KEY" in result.output and OLD_KEY not in result.output
    assert stored(app) == before


def test_a_password_change_never_encrypts_beside_a_key_it_cannot_read(app, world):
    connect(app, world, names=("acme",))
    before = stored(app)
    app.config["ENCRYPTION_KEY"] = Fernet.generate_key().decode()  # the key changed without a rotation
    with app.app_context():
        row = GoogleIntegration.for_organization(db.session.get(Organization, world["acme"]))
        with pytest.raises(SettingsError) as refused:
            set_password(row, None, "another-pass")
        assert "encryption key" in refused.value.errors["key_password"].lower()
        db.session.rollback()
    assert stored(app) == before


def test_a_new_key_never_leaves_the_old_password_under_another_key(app, world):
    connect(app, world, names=("acme",))
    app.config["ENCRYPTION_KEY"] = Fernet.generate_key().decode()
    with app.app_context():
        row = GoogleIntegration.for_organization(db.session.get(Organization, world["acme"]))
        upload_key(row, None, make_p12())  # Google's default password opens this one
    (key_token, password_token), = stored(app)
    assert password_token is None
    assert opens_under(app.config["ENCRYPTION_KEY"], [(key_token, None)])
