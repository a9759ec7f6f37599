"""Operator commands: `flask --app portal <command>` (the sync's own, `sync` and `worker`, come with
`portal.sync.init_app`)."""

from portal.cli.accounts import create_organization, create_user, rename_user_command
from portal.cli.demo import seed_demo, serve
from portal.cli.google import configure_google
from portal.cli.keys import rotate_encryption_key
from portal.cli.tokens import create_api_token, list_api_tokens, revoke_api_token


def init_app(app):
    for command in (create_organization, create_user, rename_user_command, create_api_token, seed_demo, serve,
                    configure_google, rotate_encryption_key, list_api_tokens, revoke_api_token):
        app.cli.add_command(command)
