"""privacy and access: consent-withdrawal deletion date and erasure time on elders; failed logins

Revision ID: 0008_privacy
Revises: 0007_queue_indexes
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

import storage.models.base

revision = "0008_privacy"
down_revision = "0007_queue_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("elders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deletion_due_at", storage.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("erased_at", storage.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_elders_deletion_due_at", ["deletion_due_at"], unique=False)
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("remote_addr", sa.String(length=64), nullable=False),
        sa.Column("at", storage.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failures")),
    )
    op.create_index("ix_login_failures_key", "login_failures", ["username", "remote_addr", "at"], unique=False)
    op.create_index(op.f("ix_login_failures_at"), "login_failures", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_login_failures_at"), table_name="login_failures")
    op.drop_index("ix_login_failures_key", table_name="login_failures")
    op.drop_table("login_failures")
    with op.batch_alter_table("elders", schema=None) as batch_op:
        batch_op.drop_index("ix_elders_deletion_due_at")
        batch_op.drop_column("erased_at")
        batch_op.drop_column("deletion_due_at")
