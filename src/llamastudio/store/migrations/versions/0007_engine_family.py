"""engines: the family of server an engine runs (llama.cpp, vllm, sglang, lmdeploy)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("engines") as batch:
        batch.add_column(sa.Column("family", sa.String(16), nullable=False, server_default="llama.cpp"))


def downgrade() -> None:
    with op.batch_alter_table("engines") as batch:
        batch.drop_column("family")
