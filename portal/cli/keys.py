"""The encryption key of the secrets at rest: `rotate-encryption-key`."""

from __future__ import annotations

import click
from cryptography.fernet import Fernet
from flask import current_app
from flask.cli import with_appcontext

from portal import encryption_key_file, write_owner_only
from portal.extensions import db
from portal.integration import RotationError, encryption_keys, rotate_secrets

_HOW_TO_GENERATE = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


@click.command("rotate-encryption-key")
@with_appcontext
def rotate_encryption_key():
    """Re-encrypt every stored secret under a new encryption key, in one transaction.

    With the key in instance/encryption_key, a new key is generated there. With ENCRYPTION_KEY set in the
    configuration, set it to "NEW,OLD" first; this command then moves every secret to NEW.
    """
    path = encryption_key_file(current_app)
    keys = encryption_keys()
    if path is None and len(keys) < 2:
        raise click.ClickException(
            "ENCRYPTION_KEY comes from the configuration (PORTAL_ENCRYPTION_KEY or instance/config.py), so "
            "the portal cannot replace it. Set it to a new key followed by the current one, separated by a "
            f"comma (PORTAL_ENCRYPTION_KEY=\"NEW,CURRENT\"; a new key: {_HOW_TO_GENERATE}), restart the "
            "portal and run this command again. Nothing was changed.")
    previous = path.read_text() if path is not None else None
    if path is not None and len(keys) < 2:
        keys = [Fernet.generate_key().decode(), *keys]
        # Written before any secret moves: a crash from here on leaves both keys where the portal reads them.
        write_owner_only(path, "\n".join(keys) + "\n")
    current_app.config["ENCRYPTION_KEY"] = ",".join(keys)
    try:
        count = rotate_secrets(keys)
        db.session.commit()
    except RotationError as exc:
        db.session.rollback()
        _restore(path, previous)
        raise click.ClickException(f"{exc} Nothing was changed.") from None
    except BaseException:
        db.session.rollback()
        _restore(path, previous)
        raise
    current_app.config["ENCRYPTION_KEY"] = keys[0]
    if path is not None:
        write_owner_only(path, keys[0] + "\n")
        click.echo(f"Re-encrypted {count} secrets under a new key in {path}; the old key is gone. Restart "
                   "every portal process (web and workers) now, so none keeps encrypting with the old one.")
    else:
        click.echo(f"Re-encrypted {count} secrets under the first key of ENCRYPTION_KEY. Remove the old key "
                   "from ENCRYPTION_KEY and restart every portal process (web and workers).")


def _restore(path, previous: str | None) -> None:
    if path is not None and previous is not None:
        write_owner_only(path, previous)
    current_app.config["ENCRYPTION_KEY"] = ",".join(previous.split()) if previous is not None else \
        current_app.config["ENCRYPTION_KEY"]
