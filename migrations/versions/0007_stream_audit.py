"""stream audit: how a streamed call went, its time to first chunk, its chunk count

Revision ID: 0007
Revises: 0004
Create Date: 2026-11-27 13:00:00.000000

Calls made with ``stream=True`` through the drop-in SDK clients (llm_ledger.openai) write
three more audit columns: ``stream_status`` (complete, abandoned, error, replayed, failed),
``first_chunk_ms`` (latency to the first chunk; ``latency_ms`` is to the last) and
``chunks``. The chunk sequence itself is stored with the answer, in ``responses.response``
under the key ``llm_ledger_stream`` (docs/sdk.md), so export, import, copy and the spool
carry it unchanged. All three are NULL for calls that were not streamed: nothing to backfill.
The views are rebuilt around the change: the ``calls`` view of revision 0007 selects the
three columns (llm_ledger/store/viewsets.py, ``VIEW_SETS["0007"]``); downgrade restores 0001's.
Each column carries its meaning as COMMENT (PostgreSQL, MariaDB), as models.py says it
(frozen here).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from llm_ledger.store.viewsets import rebuilt_views

revision = "0007"
down_revision = "0004"
branch_labels = None
depends_on = None


def _columns() -> list[sa.Column]:
    return [
        sa.Column(
            "stream_status",
            sa.String(16),
            nullable=True,
            comment=(
                "Streamed calls (`stream=True` through llm_ledger.openai): `complete`, "
                "`abandoned` (the caller stopped reading; the part that arrived is stored, not "
                "cached), `error` (the connection failed mid-stream; not cached), `replayed` "
                "(a hit served as a stream) or `failed` (the API failed before the stream opened). "
                "NULL when not streamed."
            ),
        ),
        sa.Column(
            "first_chunk_ms",
            sa.Double(),
            nullable=True,
            comment=(
                "Streamed misses: milliseconds (ms) from the start of the call to the first "
                "chunk; latency_ms is then the time to the last one. NULL otherwise."
            ),
        ),
        sa.Column(
            "chunks",
            sa.Integer(),
            nullable=True,
            comment=(
                "Streamed calls: events received from the API (miss) or replayed (hit) "
                "(count). NULL when not streamed."
            ),
        ),
    ]


# Plain ADD/DROP COLUMN (SQLite >= 3.35 has both): a batch rebuild of call_log would have
# to re-create its partial indexes by hand.
def upgrade() -> None:
    with rebuilt_views("0007"):
        for column in _columns():
            op.add_column("call_log", column)


def downgrade() -> None:
    with rebuilt_views("0001"):
        for column in reversed(_columns()):
            op.drop_column("call_log", column.name)
