"""Activities remember who organizes their Google event when that is not the owner

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 08:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("google_organizer", sa.String(length=254), nullable=True))


def downgrade():
    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.drop_column("google_organizer")
