"""Sync links note what a write under way carries, so a lost answer is settled by reading Google back; the
outbox records which synced fields an update touched

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 22:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("sync_links", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_state", sa.JSON(), nullable=True))
    with op.batch_alter_table("change_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fields", sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table("change_records", schema=None) as batch_op:
        batch_op.drop_column("fields")
    with op.batch_alter_table("sync_links", schema=None) as batch_op:
        batch_op.drop_column("pending_state")
