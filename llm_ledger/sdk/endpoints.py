"""The Responses API as a pipeline endpoint: what differs from chat (usage names, input)."""

from __future__ import annotations

from typing import Any

from .. import api, keys, tokens
from ..calls import Context, Endpoint
from ..records import Usage
from . import wire


class ResponsesEndpoint(Endpoint):
    """``responses.create`` / ``parse``: ``input`` and ``instructions`` instead of messages,
    ``input_tokens``/``output_tokens`` instead of prompt/completion tokens."""

    kind = "responses"

    def sampling(self, request: keys.CanonicalRequest) -> tuple[float | None, int | None]:
        return request.params.get("temperature"), None

    def prompt_tokens(
        self, ctx: Context, request: keys.CanonicalRequest, items: list[keys.CanonicalRequest]
    ) -> int | None:
        assert isinstance(request, keys.ResponsesRequest)
        return ctx.count_tokens(request.as_messages(), request.model)

    def max_output(self, request: keys.CanonicalRequest) -> int:
        return request.params.get("max_output_tokens") or 4096

    def usage(
        self,
        ctx: Context,
        request: keys.CanonicalRequest,
        response: dict[str, Any],
        items: list[keys.CanonicalRequest],
    ) -> Usage:
        usage = wire.response_usage(response)
        counted = api.usage_of({"usage": usage}) if usage is not None else None
        if counted is not None:
            return counted
        prompt = self.prompt_tokens(ctx, request, items)
        completion = tokens.count_text_tokens(wire.response_text(response), request.model)
        total = prompt + completion if prompt is not None and completion is not None else None
        return Usage(prompt, completion, None, None, total, estimated=True)


RESPONSES = ResponsesEndpoint()
