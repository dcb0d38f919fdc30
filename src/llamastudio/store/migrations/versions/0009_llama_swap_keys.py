"""served models: llama-swap's per-model keys (listing, body filters, readiness, groups, owner)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("unlisted", sa.Boolean(), sa.false()),
    ("title", sa.Text(), None),
    ("description", sa.Text(), None),
    ("metadata", sa.JSON(), sa.text("'{}'")),
    ("use_model_name", sa.Text(), None),
    ("strip_params", sa.JSON(), sa.text("'[]'")),
    ("set_params", sa.JSON(), sa.text("'{}'")),
    ("check_endpoint", sa.Text(), None),
    ("start_timeout", sa.Float(), None),
    ("cmd_stop", sa.JSON(), None),
    ("proxy", sa.Text(), None),
    ("group_swap", sa.Boolean(), sa.true()),
    ("group_exclusive", sa.Boolean(), sa.false()),
    ("group_persistent", sa.Boolean(), sa.false()),
    ("source", sa.Text(), None),
    ("extra", sa.JSON(), sa.text("'{}'")),
)


def upgrade() -> None:
    with op.batch_alter_table("served_models") as batch:
        for name, type_, default in _COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=default is None, server_default=default))


def downgrade() -> None:
    with op.batch_alter_table("served_models") as batch:
        for name, _type, _default in reversed(_COLUMNS):
            batch.drop_column(name)
