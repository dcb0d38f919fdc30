"""served model configurations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "served_models",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("engine_id", sa.String(64), nullable=True),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("auto", sa.Boolean(), nullable=False),
        sa.Column("command", sa.JSON(), nullable=True),
        sa.Column("aliases", sa.JSON(), nullable=False),
        sa.Column("ttl", sa.Float(), nullable=True),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("group", sa.String(128), nullable=True),
        sa.Column("max_concurrency", sa.Integer(), nullable=False),
        sa.Column("max_queue", sa.Integer(), nullable=False),
        sa.Column("reserve", sa.JSON(), nullable=True),
        sa.Column("env", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("served_models")
