"""engines and model pins

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "engines",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("commit", sa.String(64), nullable=False),
        sa.Column("backends", sa.JSON(), nullable=False),
        sa.Column("build_options", sa.JSON(), nullable=False),
        sa.Column("patches", sa.JSON(), nullable=False),
        sa.Column("source", sa.JSON(), nullable=False),
        sa.Column("build_key", sa.String(64), nullable=False),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("binaries", sa.JSON(), nullable=False),
        sa.Column("validation", sa.JSON(), nullable=False),
        sa.Column("capabilities", sa.JSON(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_engines_build_key", "engines", ["build_key"])
    op.create_table(
        "model_pins",
        sa.Column("model", sa.String(1024), primary_key=True),
        sa.Column(
            "engine_id", sa.String(64), sa.ForeignKey("engines.id", ondelete="CASCADE"), nullable=False
        ),
    )
    op.create_index("ix_model_pins_engine_id", "model_pins", ["engine_id"])


def downgrade() -> None:
    op.drop_table("model_pins")
    op.drop_table("engines")
