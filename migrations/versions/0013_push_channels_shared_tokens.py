"""Access tokens shared by the workers (encrypted), and the confirmed watch channel's expiry per user

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 10:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "sync_shared_tokens",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=320), nullable=False),
        sa.Column("token_ciphertext", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sync_shared_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sync_shared_tokens_fingerprint"), ["fingerprint"], unique=False)
        batch_op.create_index(batch_op.f("ix_sync_shared_tokens_subject"), ["subject"], unique=False)
        batch_op.create_index(batch_op.f("ix_sync_shared_tokens_expires_at"), ["expires_at"], unique=False)
    with op.batch_alter_table("calendar_syncs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("push_expires_at", sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table("calendar_syncs", schema=None) as batch_op:
        batch_op.drop_column("push_expires_at")
    with op.batch_alter_table("sync_shared_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_shared_tokens_expires_at"))
        batch_op.drop_index(batch_op.f("ix_sync_shared_tokens_subject"))
        batch_op.drop_index(batch_op.f("ix_sync_shared_tokens_fingerprint"))
    op.drop_table("sync_shared_tokens")
