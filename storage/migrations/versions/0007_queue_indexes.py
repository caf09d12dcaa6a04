"""queue indexes: a partial index on the queue's head, partial lease/completion indexes, no
separate elder_id index (uq_checkins_elder_slot starts with elder_id)

Revision ID: 0007_queue_indexes
Revises: 0006_merge
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_queue_indexes"
down_revision = "0006_merge"
branch_labels = None
depends_on = None

READY = "status IN ('due', 'retry_wait')"


def _partial(where: str) -> dict[str, object]:
    return {"postgresql_where": sa.text(where), "sqlite_where": sa.text(where)}


def upgrade() -> None:
    with op.batch_alter_table("checkins", schema=None) as batch_op:
        batch_op.drop_index("ix_checkins_elder_id")
        batch_op.drop_index("ix_checkins_lease_expires_at")
        batch_op.drop_index("ix_checkins_completed_at")
    op.create_index("ix_checkins_ready", "checkins", ["priority", "next_attempt_at", "id"], unique=False,
                    **_partial(READY))
    op.create_index("ix_checkins_lease_expires_at", "checkins", ["lease_expires_at"], unique=False,
                    **_partial("lease_expires_at IS NOT NULL"))
    op.create_index("ix_checkins_completed_at", "checkins", ["completed_at"], unique=False,
                    **_partial("completed_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_checkins_completed_at", table_name="checkins")
    op.drop_index("ix_checkins_lease_expires_at", table_name="checkins")
    op.drop_index("ix_checkins_ready", table_name="checkins")
    with op.batch_alter_table("checkins", schema=None) as batch_op:
        batch_op.create_index("ix_checkins_completed_at", ["completed_at"], unique=False)
        batch_op.create_index("ix_checkins_lease_expires_at", ["lease_expires_at"], unique=False)
        batch_op.create_index("ix_checkins_elder_id", ["elder_id"], unique=False)
