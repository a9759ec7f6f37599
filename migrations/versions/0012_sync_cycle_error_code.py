"""Sync cycles keep the code of the error that stopped them, so diagnostics can count each kind

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 07:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("sync_cycles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("error_code", sa.String(length=50), nullable=True))


def downgrade():
    with op.batch_alter_table("sync_cycles", schema=None) as batch_op:
        batch_op.drop_column("error_code")
