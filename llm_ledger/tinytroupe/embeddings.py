"""TinyTroupe's semantic-memory embeddings through the ledger.

TinyTroupe builds a llama-index ``OpenAIEmbedding`` (``AzureOpenAIEmbedding`` for Azure)
when it is imported and puts it in ``llama_index.core.Settings.embed_model``; its
grounding connectors build their ``VectorStoreIndex`` with whatever that setting holds
when they index. So replacing ``Settings.embed_model`` routes every later embedding
through the ledger's per-item embedding cache, with no change to TinyTroupe's files.
(An index built before :func:`llm_ledger.tinytroupe.install` keeps the model it was
built with.)

``LedgerEmbedder`` is the plain part (no llama-index needed); :func:`llama_index_model`
wraps it in llama-index's documented custom-embedding base class.
"""

from __future__ import annotations

from typing import Any

from ..errors import APICallError


class LedgerEmbedder:
    """Texts -> vectors through a ledger client's ``get_embedding`` (each text cached on
    its own). The model is the client's ``embedding_model`` at each call (TinyTroupe's
    ``EMBEDDING_MODEL``) unless one is given."""

    def __init__(self, client: Any, model: str | None = None) -> None:
        self.client = client
        self.model = model

    def model_name(self) -> str:
        return self.model or self.client._settings().embedding_model

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self.client.get_embedding(list(texts), self.model, raise_on_error=True)
        if vectors is None:  # raise_on_error=True: only a custom client could get here
            raise APICallError("the embedding call gave no answer", attempts=0, error_type="None")
        return vectors


def llama_index_model(embedder: LedgerEmbedder, *, embed_batch_size: int = 10) -> Any:
    """A llama-index ``BaseEmbedding`` whose every call goes through ``embedder``."""
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import PrivateAttr

    class LedgerEmbedding(BaseEmbedding):  # type: ignore[misc,valid-type]
        """llama-index embeddings answered from, or recorded in, the ledger."""

        _embedder: Any = PrivateAttr()

        def __init__(self, embedder: LedgerEmbedder, **kwargs: Any) -> None:
            super().__init__(model_name=embedder.model_name(), **kwargs)
            self._embedder = embedder

        @classmethod
        def class_name(cls) -> str:
            return "LedgerEmbedding"

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._embedder.embed([query])[0]

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._embedder.embed([text])[0]

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return self._embedder.embed(texts)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        async def _aget_text_embedding(self, text: str) -> list[float]:
            return self._get_text_embedding(text)

    return LedgerEmbedding(embedder, embed_batch_size=embed_batch_size)


__all__ = ["LedgerEmbedder", "llama_index_model"]
