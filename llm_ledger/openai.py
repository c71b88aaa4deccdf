"""Drop-in OpenAI SDK clients on the ledger (docs/sdk.md).

    from llm_ledger.openai import OpenAI   # in place of: from openai import OpenAI

``OpenAI``, ``AsyncOpenAI``, ``AzureOpenAI``, ``AsyncAzureOpenAI`` take the SDK's arguments
plus the ledger's (``ledger=``, ``mode=``, ``namespace=``, ...); ``wrap(client)`` puts a
client you already built on the ledger. The implementation lives in ``llm_ledger.sdk``.
"""

from __future__ import annotations

from .sdk.clients import AsyncAzureOpenAI, AsyncOpenAI, AzureOpenAI, OpenAI, wrap

__all__ = ["AsyncAzureOpenAI", "AsyncOpenAI", "AzureOpenAI", "OpenAI", "wrap"]
