"""Alembic environment: one schema, three engines.

The URL comes from ``-x url=...``, else ``LLM_LEDGER_URL``, else ``sqlalchemy.url``
in the config, else ``./llm_ledger.db``. llm_ledger passes its own connection
through ``config.attributes["connection"]`` when it migrates at open.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context

from llm_ledger.search import DERIVED_NAMES
from llm_ledger.store.db import make_engine
from llm_ledger.store.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    return (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("LLM_LEDGER_URL")
        or config.get_main_option("sqlalchemy.url")
        or "llm_ledger.db"
    )


def _include_name(name, type_, parent_names) -> bool:  # type: ignore[no-untyped-def]
    """Leave out what no model describes: the full-text search objects of migration 0008."""
    return name not in DERIVED_NAMES


def _configure(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=_include_name,
    )


def run_migrations_offline() -> None:
    from llm_ledger.store.db import normalize_url

    context.configure(
        url=normalize_url(_url()), target_metadata=target_metadata, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
