"""Google Calendar integration settings per organization, and the settings audit log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 07:30:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('google_integrations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('organization_id', sa.Integer(), nullable=False),
    sa.Column('service_account_email', sa.String(length=254), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.String(length=100), nullable=False),
    sa.Column('key_kind', sa.String(length=4), nullable=True),
    sa.Column('key_ciphertext', sa.Text(), nullable=True),
    sa.Column('password_ciphertext', sa.Text(), nullable=True),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('key_fingerprint', sa.String(length=95), nullable=False),
    sa.Column('key_valid_from', sa.DateTime(), nullable=True),
    sa.Column('key_valid_until', sa.DateTime(), nullable=True),
    sa.Column('key_uploaded_at', sa.DateTime(), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('error_code', sa.String(length=50), nullable=True),
    sa.Column('error_cause', sa.Text(), nullable=True),
    sa.Column('error_fix', sa.Text(), nullable=True),
    sa.Column('error_at', sa.DateTime(), nullable=True),
    sa.Column('last_test_at', sa.DateTime(), nullable=True),
    sa.Column('last_test_email', sa.String(length=254), nullable=True),
    sa.Column('last_test_ok', sa.Boolean(), nullable=True),
    sa.Column('settings_changed_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('organization_id')
    )
    op.create_table('audit_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('organization_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=50), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.create_index('ix_audit_entries_organization_at', ['organization_id', 'at'], unique=False)


def downgrade():
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entries_organization_at')

    op.drop_table('audit_entries')
    op.drop_table('google_integrations')
