"""API tokens get a name, an expiry and a revocation time

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 09:00:00.000000

"""
from datetime import UTC, datetime, timedelta

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(), nullable=True))
    # Tokens made before expiry existed get the default lifetime from today rather than living forever.
    expires = (datetime.now(UTC) + timedelta(days=90)).replace(tzinfo=None)
    tokens = sa.table("api_tokens", sa.column("name", sa.String), sa.column("expires_at", sa.DateTime))
    op.execute(tokens.update().values(name="API token", expires_at=expires))
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.alter_column("name", existing_type=sa.String(length=100), nullable=False)


def downgrade():
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("name")
