"""Quiet cycles are counted, not stored: a user's current run of them on calendar_syncs, the run before each
stored cycle on its row; and the scheduler's claim of a user (claimed_until) is the user's lease

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 10:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("calendar_syncs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_until", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("quiet_cycles", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("quiet_since", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("last_quiet_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("sync_cycles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quiet_before", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("quiet_first_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("quiet_last_at", sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table("sync_cycles", schema=None) as batch_op:
        batch_op.drop_column("quiet_last_at")
        batch_op.drop_column("quiet_first_at")
        batch_op.drop_column("quiet_before")
    with op.batch_alter_table("calendar_syncs", schema=None) as batch_op:
        batch_op.drop_column("last_quiet_at")
        batch_op.drop_column("quiet_since")
        batch_op.drop_column("quiet_cycles")
        batch_op.drop_column("claimed_by")
        batch_op.drop_column("claimed_until")
