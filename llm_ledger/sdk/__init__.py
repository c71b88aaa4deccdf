"""The OpenAI SDK drop-in (``llm_ledger.openai``): clients.py (the four classes and wrap),
core.py (SDK request <-> pipeline call), endpoints.py (the Responses API endpoint),
streams.py (live and replayed streams), wire.py (JSON and SSE shapes, pure)."""
