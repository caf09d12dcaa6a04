"""merge the scheduler, escalations and WeChat branches

Revision ID: 0006_merge
Revises: 0003_scheduler, 0004_escalations, 0005_wechat
Create Date: 2026-11-29
"""

revision = "0006_merge"
down_revision = ("0003_scheduler", "0004_escalations", "0005_wechat")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
