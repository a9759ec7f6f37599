"""How far a user's first sync got: items done of the items its plan holds

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 07:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("calendar_syncs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("first_sync_total", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("first_sync_done", sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table("calendar_syncs", schema=None) as batch_op:
        batch_op.drop_column("first_sync_done")
        batch_op.drop_column("first_sync_total")
