"""Sync links note the Google event type: Google refuses some changes to events Gmail made

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 01:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("sync_links", schema=None) as batch_op:
        batch_op.add_column(sa.Column("event_type", sa.String(length=20), nullable=True))


def downgrade():
    with op.batch_alter_table("sync_links", schema=None) as batch_op:
        batch_op.drop_column("event_type")
