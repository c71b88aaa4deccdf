"""``AsyncOpenAIClient`` / ``AsyncAzureClient``: the seed's API, awaitable.

``await client.send_message(...)`` and ``await client.get_embedding(...)`` take the same
arguments and give the same answers and audit rows as the seed client's, because they are
the seed client's calls, run in the ledger's small thread pool (llm_ledger.sdk.core.in_pool)
in a copy of the caller's context: ``scope(run, tags, max_cost_usd)`` follows them across
``await`` and ``asyncio.gather``, and concurrent identical calls make one API request.
"""

from __future__ import annotations

import functools
from typing import Any

from ..clients import AzureClient, OpenAIClient
from .core import in_pool


class AsyncOpenAIClient:
    """The seed's ``OpenAIClient`` with awaitable calls (constructor arguments as its)."""

    sync_class: type[OpenAIClient] = OpenAIClient

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sync = self.sync_class(*args, **kwargs)

    async def send_message(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        """``OpenAIClient.send_message``, awaited."""
        return await in_pool(functools.partial(self.sync.send_message, *args, **kwargs))

    async def get_embedding(self, *args: Any, **kwargs: Any) -> Any:
        """``OpenAIClient.get_embedding``, awaited."""
        return await in_pool(functools.partial(self.sync.get_embedding, *args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        # Settings and seed helpers (ledger, set_api_cache, mode, ...) are the sync client's.
        if name == "sync":
            raise AttributeError(name)
        return getattr(self.sync, name)


class AsyncAzureClient(AsyncOpenAIClient):
    """The seed's ``AzureClient`` with awaitable calls."""

    sync_class = AzureClient
