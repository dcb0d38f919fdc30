"""one jobs system: progress in units, message, result, log line count, start/finish times

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("progress_done", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("progress_total", sa.Float(), nullable=True))
        batch.add_column(sa.Column("progress_unit", sa.String(16), nullable=False, server_default=""))
        batch.add_column(sa.Column("message", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("result", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("log_lines", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
    # downloads stored by the previous version: their byte counts become the new progress fields
    op.execute(
        "UPDATE jobs SET progress_unit = 'bytes', "
        "progress_total = json_extract(params, '$.bytes_total'), "
        "progress_done = progress * COALESCE(json_extract(params, '$.bytes_total'), 0), "
        "result = json_object('paths', COALESCE(json_extract(params, '$.paths'), json('[]'))) "
        "WHERE kind = 'download'"
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name in (
            "finished_at",
            "started_at",
            "log_lines",
            "result",
            "message",
            "progress_unit",
            "progress_total",
            "progress_done",
        ):
            batch.drop_column(name)
