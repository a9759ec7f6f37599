"""An answer given in the portal is flagged on the participant's sync state (answers_pending), so idle cycles
do not look for answers to send; existing rows start flagged, so each user's next cycle looks once

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 14:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("calendar_syncs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("answers_pending", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade():
    with op.batch_alter_table("calendar_syncs", schema=None) as batch_op:
        batch_op.drop_column("answers_pending")
