"""The storage layer: everything that knows the ledger's tables and talks SQL.

- models: the tables; each column carries its meaning
- db: engines, pragmas, the schema at open, migrations
- statements: compiled SQL on the raw DBAPI; the audit row mapped once
- repository: Ledger: a call's lookup, and its rows recorded in one transaction
- merge: rows from another ledger merged in by natural identity (import, copy)
- selection: one consistent snapshot (what an export reads)
- maintenance: prune, vacuum, the ledger's size
- spool: a call's record kept on disk when the database fails
- checkpoint: SQLite WAL checkpoints off the caller's thread
- writebehind: call records journaled, then written in batches (the default)
- background: the debounced daemon thread checkpoint and writebehind share
- viewsets: the views per schema revision
- textviews: the views' text columns and search objects, per engine (revision 0008)
- journal: write-behind: a call's record safe on append, written in batches
- schema_doc: docs/schema.md, generated from the models and views

Who may import it: the call pipeline (calls, clients, embeddings...), the reports and transfer
modules, cli/, tinytroupe/, tests and benchmarks. It imports only the modules below it
(errors, keys, log, records, policy, process), never the pipeline, the reports or the CLI
(tests/test_layers.py). This ``__init__`` imports nothing, so ``import llm_ledger`` stays
cheap (tests/test_cold_start.py).
"""

from __future__ import annotations
