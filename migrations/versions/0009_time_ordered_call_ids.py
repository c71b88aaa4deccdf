"""time-ordered call ids: ``call_log.call_uuid`` says new calls' ids are UUID version 7

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 23:40:00.000000

From this version the library gives each call an RFC 9562 version-7 UUID (48-bit Unix time
in milliseconds, then 74 random bits) instead of a version-4 one: each new audit row's id
then goes at the end of the unique index on ``call_uuid`` instead of on a random page of
it, which in a ledger of 300,000 calls took an audit row's insert from ~115 to ~80 µs
(docs/benchmarks.md, session seven). Existing ids stay as they are; both kinds are unique
text of the same shape, and nothing reads meaning into them.

Only the column's COMMENT changes (PostgreSQL, MariaDB); SQLite keeps no comments. The
texts are frozen here, as 0004 froze the first ones.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BEFORE = "UUID4 of the call: spool recovery writes each call exactly once."
AFTER = (
    "UUID of the call, unique: version 7 (time-ordered) since revision 0009, version 4 "
    "before; spool and journal recovery write each call exactly once by it."
)


def _comment(new: str, old: str) -> None:
    name = op.get_context().dialect.name
    if name == "sqlite":
        return
    mysql_like = name in ("mysql", "mariadb")  # MODIFY restates the whole column
    op.alter_column(
        "call_log",
        "call_uuid",
        comment=new,
        existing_comment=old,
        existing_type=sa.String(36),
        existing_nullable=False,
        existing_server_default=None,
        **({"autoincrement": False} if mysql_like else {}),
    )


def upgrade() -> None:
    _comment(AFTER, BEFORE)


def downgrade() -> None:
    _comment(BEFORE, AFTER)
