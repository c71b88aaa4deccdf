"""Benchmarks of llm_ledger against the raw-sqlite3 floor and the alternatives: see docs/benchmarks.md."""
