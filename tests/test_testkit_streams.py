"""The test kit's streaming, Responses API and mid-stream faults, through the plain SDK."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import openai
import pydantic
import pytest
from openai import OpenAI

from llm_ledger.testing import FakeOpenAIServer
from llm_ledger.testkit_streams import json_for_schema, pieces

HELLO = [{"role": "user", "content": "one two three four"}]


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(stream_words=2) as srv:
        yield srv


@pytest.fixture
def server(shared: FakeOpenAIServer) -> FakeOpenAIServer:
    shared.reset()
    return shared


@pytest.fixture
def client(server: FakeOpenAIServer) -> Iterator[OpenAI]:
    with OpenAI(api_key="test-key", base_url=server.url, max_retries=0) as c:
        yield c


def test_pieces_keep_every_space() -> None:
    assert pieces("a b c d e", 2) == ["a b ", "c d ", "e"]
    assert pieces("a b", None) == ["a b"]
    assert "".join(pieces("answer 1 to: x y z", 3)) == "answer 1 to: x y z"


def test_chat_stream_in_word_chunks(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True))
    assert [c.choices[0].delta.content for c in chunks] == [
        "answer 1 ",
        "to: one ",
        "two three ",
        "four",
        None,
    ]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_responses_answer_and_usage(server: FakeOpenAIServer, client: OpenAI) -> None:
    r = client.responses.create(model="gpt-4o-mini", input="hello there", instructions="be brief")
    assert r.id == "resp_1"
    assert r.output_text == "answer 1 to: hello there"
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (7, 5, 12)
    again = client.responses.create(
        model="gpt-4o-mini", input="hello there", instructions="be brief"
    )
    assert again.output_text == "answer 2 to: hello there"
    assert server.response_count == 2
    assert server.requests[0].path == "/v1/responses"


def test_responses_input_items_use_the_last_text(client: OpenAI) -> None:
    items = [
        {"role": "user", "content": "first"},
        {"role": "user", "content": [{"type": "input_text", "text": "second part"}]},
    ]
    r = client.responses.create(model="gpt-4o-mini", input=items)
    assert r.output_text == "answer 1 to: second part"


def test_responses_stream_events(client: OpenAI) -> None:
    events = list(client.responses.create(model="gpt-4o-mini", input="a b c", stream=True))
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(11))
    assert events[-1].response.output_text == "answer 1 to: a b c"


def test_json_schema_formats_get_fitting_json(client: OpenAI) -> None:
    class Pet(pydantic.BaseModel):
        name: str
        legs: int
        tags: list[str]

    chat = client.chat.completions.parse(model="gpt-4o-mini", messages=HELLO, response_format=Pet)
    assert chat.choices[0].message.parsed == Pet(
        name="answer 1 to: one two three four", legs=1, tags=[]
    )
    resp = client.responses.parse(model="gpt-4o-mini", input="x", text_format=Pet)
    assert resp.output_parsed == Pet(name="answer 1 to: x", legs=1, tags=[])
    assert json_for_schema({"type": ["string", "null"]}, "t") == "t"


def test_drop_after_k_chunks(server: FakeOpenAIServer, client: OpenAI) -> None:
    server.drop_next(after_chunks=2)
    got = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, stream=True
        ):
            got.append(chunk.choices[0].delta.content)
    assert got == ["answer 1 ", "to: one "]
    assert server.request_count == 1


def test_drop_after_chunks_drops_an_unstreamed_request_whole(
    server: FakeOpenAIServer, client: OpenAI
) -> None:
    server.drop_next(after_chunks=2)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert server.requests[0].status == 0


def test_pause_holds_the_rest_of_a_stream(server: FakeOpenAIServer, client: OpenAI) -> None:
    gate = server.pause_next_stream(after_chunks=1)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True)
    first = threading.Event()
    got: list[str | None] = []

    def read() -> None:
        for chunk in stream:
            got.append(chunk.choices[0].delta.content)
            first.set()

    reader = threading.Thread(target=read)
    reader.start()
    held = first.wait(10) and len(got) == 1
    gate.set()
    reader.join(10)
    assert held
    assert len(got) == 5


def test_an_error_event_after_k_chunks(server: FakeOpenAIServer, client: OpenAI) -> None:
    server.error_next_stream(after_chunks=2, message="overloaded mid-stream")
    got = []
    with pytest.raises(openai.APIError, match="overloaded mid-stream") as caught:
        for chunk in client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, stream=True
        ):
            got.append(chunk.choices[0].delta.content)
    assert type(caught.value) is openai.APIError
    assert got == ["answer 1 ", "to: one "]


def test_a_raw_reply_is_sent_as_it_is(server: FakeOpenAIServer, client: OpenAI) -> None:
    import json

    server.reply_raw_next(b'{"id": "x", "choices": [ {broken')
    with pytest.raises(json.JSONDecodeError):
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    server.reply_raw_next(b"{}")
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices is None
    assert [r.status for r in server.requests] == [200, 200]
