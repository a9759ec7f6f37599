"""Participants' answers and the organization's "participants may edit"; web hook replays and floods

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 05:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("participants_can_edit", sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
    with op.batch_alter_table("activity_participants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("response_pending", sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table("sync_push_channels", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_message_number", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("window_started_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("window_count", sa.Integer(), server_default="0", nullable=False))


def downgrade():
    with op.batch_alter_table("sync_push_channels", schema=None) as batch_op:
        batch_op.drop_column("window_count")
        batch_op.drop_column("window_started_at")
        batch_op.drop_column("last_message_number")
    with op.batch_alter_table("activity_participants", schema=None) as batch_op:
        batch_op.drop_column("response_pending")
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.drop_column("participants_can_edit")
