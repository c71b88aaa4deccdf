"""The fake OpenAI server, driven through the real openai SDK."""

from __future__ import annotations

import base64
import http.client
import json
import struct
from collections.abc import Iterator

import openai
import pytest
from openai import AzureOpenAI, OpenAI

from llm_ledger.testing import FakeOpenAIServer, RecordedRequest

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def server(shared_server: FakeOpenAIServer) -> FakeOpenAIServer:
    shared_server.reset()
    return shared_server


@pytest.fixture
def client(server: FakeOpenAIServer) -> Iterator[OpenAI]:
    with OpenAI(api_key="test-key", base_url=server.url, max_retries=0) as c:
        yield c


def raw_request(server: FakeOpenAIServer, method: str, path: str, body: object = None):
    """A plain http.client request, for what the SDK cannot send (e.g. invalid bodies)."""
    conn = http.client.HTTPConnection("127.0.0.1", int(server.azure_endpoint.rsplit(":", 1)[1]))
    try:
        payload = None if body is None else json.dumps(body)
        conn.request(method, path, body=payload, headers={"content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), json.loads(resp.read())
    finally:
        conn.close()


def test_urls(server: FakeOpenAIServer) -> None:
    port = int(server.azure_endpoint.rsplit(":", 1)[1])
    assert server.azure_endpoint == f"http://127.0.0.1:{port}"
    assert server.url == f"http://127.0.0.1:{port}/v1"


def test_chat_content_and_metadata(server: FakeOpenAIServer, client: OpenAI) -> None:
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert resp.choices[0].message.content == "answer 1 to: hello there"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.id == "chatcmpl-1"
    assert resp.created == 1700000000
    assert resp.object == "chat.completion"
    assert resp.model == "gpt-4o-mini"
    assert resp.system_fingerprint == "fp_test"
    assert server.chat_count == 1


def test_identical_request_counter_increments(client: OpenAI) -> None:
    first = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    second = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, user="u1")
    other = client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert first.choices[0].message.content == "answer 1 to: hello there"
    assert second.choices[0].message.content == "answer 2 to: hello there"
    assert other.choices[0].message.content == "answer 1 to: hello there"
    assert (first.id, second.id, other.id) == ("chatcmpl-1", "chatcmpl-2", "chatcmpl-3")


def test_last_message_parts_joined_and_truncated(client: OpenAI) -> None:
    long = "x" * 100
    parts = [{"type": "text", "text": "look at"}, {"type": "text", "text": "this"}]
    resp = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": long}, {"role": "user", "content": parts}],
    )
    assert resp.choices[0].message.content == "answer 1 to: look at this"
    resp = client.chat.completions.create(model="m", messages=[{"role": "user", "content": long}])
    assert resp.choices[0].message.content == "answer 1 to: " + "x" * 60


def test_chat_n_choices(client: OpenAI) -> None:
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, n=2)
    assert [c.message.content for c in resp.choices] == [
        "answer 1.0 to: hello there",
        "answer 1.1 to: hello there",
    ]
    assert [c.index for c in resp.choices] == [0, 1]
    assert resp.usage is not None and resp.usage.completion_tokens == 10


def test_chat_usage_numbers(client: OpenAI) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"},
    ]
    usage = client.chat.completions.create(model="gpt-4o-mini", messages=messages).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (10, 5, 15)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_usage_details_and_forced_usage(server: FakeOpenAIServer, client: OpenAI) -> None:
    server.set_usage_details(cached_tokens=4, reasoning_tokens=7)
    server.set_usage(prompt_tokens=100)
    usage = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (100, 5, 105)
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 4
    assert usage.completion_tokens_details
    assert usage.completion_tokens_details.reasoning_tokens == 7


def test_omit_usage(server: FakeOpenAIServer, client: OpenAI) -> None:
    server.omit_usage(True)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).usage is None


def test_chat_streaming(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "answer 1 to: hello there"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 10


def test_embeddings_float_and_base64_agree(server: FakeOpenAIServer, client: OpenAI) -> None:
    floats = client.embeddings.create(
        model="text-embedding-3-small", input="hello", encoding_format="float"
    )
    decoded = client.embeddings.create(model="text-embedding-3-small", input="hello")
    vec = floats.data[0].embedding
    assert len(vec) == 8
    assert all(-1 <= x <= 1 and round(x, 6) == x for x in vec)
    assert [round(x, 6) for x in decoded.data[0].embedding] == vec
    assert server.requests[-1].body is not None
    assert server.requests[-1].body["encoding_format"] == "base64"
    assert server.embedding_count == 2


def test_embeddings_raw_base64_is_little_endian_float32(server: FakeOpenAIServer) -> None:
    body = {"model": "e", "input": "hi", "encoding_format": "base64"}
    status, _, answer = raw_request(server, "POST", "/v1/embeddings", body)
    _, _, floats = raw_request(server, "POST", "/v1/embeddings", {"model": "e", "input": "hi"})
    assert status == 200
    unpacked = struct.unpack("<8f", base64.b64decode(answer["data"][0]["embedding"]))
    assert [round(x, 6) for x in unpacked] == floats["data"][0]["embedding"]


def test_embeddings_list_order_dimensions_and_usage(client: OpenAI) -> None:
    single = client.embeddings.create(model="e", input="b c", encoding_format="float")
    resp = client.embeddings.create(
        model="e", input=["a", "b c", ""], dimensions=40, encoding_format="float"
    )
    assert [d.index for d in resp.data] == [0, 1, 2]
    assert [len(d.embedding) for d in resp.data] == [40, 40, 40]
    assert resp.data[1].embedding[:8] == single.data[0].embedding
    assert resp.data[0].embedding != resp.data[1].embedding
    assert (resp.usage.prompt_tokens, resp.usage.total_tokens) == (4, 4)


def test_embeddings_depend_on_model(client: OpenAI) -> None:
    a = client.embeddings.create(model="a", input="x", encoding_format="float")
    b = client.embeddings.create(model="b", input="x", encoding_format="float")
    assert a.data[0].embedding != b.data[0].embedding


def test_azure_deployment(server: FakeOpenAIServer) -> None:
    azure = AzureOpenAI(
        azure_endpoint=server.azure_endpoint, api_key="k", api_version="2024-06-01", max_retries=0
    )
    resp = azure.chat.completions.create(model="my-deploy", messages=HELLO)
    emb = azure.embeddings.create(model="my-emb", input="hi", encoding_format="float")
    assert resp.model == "my-deploy"
    assert resp.choices[0].message.content == "answer 1 to: hello there"
    assert len(emb.data[0].embedding) == 8
    paths = [r.path for r in server.requests]
    assert paths == [
        "/openai/deployments/my-deploy/chat/completions?api-version=2024-06-01",
        "/openai/deployments/my-emb/embeddings?api-version=2024-06-01",
    ]
    assert server.requests[0].headers["api-key"] == "k"


def test_models_list(client: OpenAI) -> None:
    assert "gpt-4o-mini" in [m.id for m in client.models.list()]


def test_unknown_path_is_404(server: FakeOpenAIServer) -> None:
    status, _, body = raw_request(server, "POST", "/v1/nope", {"model": "m"})
    assert status == 404
    assert body["error"]["message"] == "Invalid URL (POST /v1/nope)"
    assert server.requests[-1].status == 404


def test_rate_limit_with_retry_after(server: FakeOpenAIServer, client: OpenAI) -> None:
    server.fail_next(429, retry_after=2)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.code == "rate_limit_exceeded"
    assert server.request_count == 1
    assert server.chat_count == 0
    assert server.requests[0].status == 429
    ok = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert ok.choices[0].message.content == "answer 1 to: hello there"


def test_server_error_with_message(server: FakeOpenAIServer, client: OpenAI) -> None:
    server.fail_next(500, times=2, message="boom")
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as info:
            client.embeddings.create(model="e", input="x")
        assert info.value.status_code == 500
        assert info.value.body == {
            "message": "boom",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    assert server.request_count == 2
    assert server.embedding_count == 0


def test_faults_consumed_in_order(server: FakeOpenAIServer, client: OpenAI) -> None:
    server.fail_next(503)
    server.fail_next(401)
    with pytest.raises(openai.InternalServerError):
        client.models.list()
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    assert [r.status for r in server.requests] == [503, 401]


def test_empty_model_is_400(server: FakeOpenAIServer, client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="", messages=HELLO)
    assert server.requests[-1].status == 400
    assert server.chat_count == 0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": HELLO}),
        ("/v1/chat/completions", {"model": "m", "messages": []}),
        ("/v1/chat/completions", {"model": "m", "messages": ["hi"]}),
        ("/v1/chat/completions", {"model": "m", "messages": [{"content": "hi"}]}),
        ("/v1/embeddings", {"model": "e", "input": []}),
        ("/v1/embeddings", {"model": "e", "input": [1, 2]}),
        ("/v1/embeddings", {"model": "e"}),
    ],
)
def test_validation_400(server: FakeOpenAIServer, path: str, body: dict) -> None:
    status, _, answer = raw_request(server, "POST", path, body)
    assert status == 400
    assert answer["error"]["type"] == "invalid_request_error"


def test_drop_raises_connection_error(server: FakeOpenAIServer, client: OpenAI) -> None:
    server.drop_next()
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert server.request_count == 1
    assert server.requests[0].status == 0
    ok = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert ok.choices[0].message.content == "answer 1 to: hello there"


def test_delay_causes_client_timeout(server: FakeOpenAIServer) -> None:
    server.delay_next(1.0)
    slow = OpenAI(api_key="test-key", base_url=server.url, max_retries=0, timeout=0.2)
    with pytest.raises(openai.APITimeoutError):
        slow.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert server.request_count == 1


def test_headers_and_body_recorded(server: FakeOpenAIServer, client: OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    [req] = server.requests
    assert isinstance(req, RecordedRequest)
    assert (req.method, req.path, req.status) == ("POST", "/v1/chat/completions", 200)
    assert req.headers["authorization"] == "Bearer test-key"
    assert req.body == {"model": "gpt-4o-mini", "messages": HELLO}


def test_reset_clears_everything(server: FakeOpenAIServer, client: OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    client.embeddings.create(model="e", input="x")
    server.fail_next(500)
    server.set_usage_details(cached_tokens=3)
    server.reset()
    assert (server.request_count, server.chat_count, server.embedding_count) == (0, 0, 0)
    assert server.requests == []
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert resp.choices[0].message.content == "answer 1 to: hello there"
    assert resp.id == "chatcmpl-1"
    assert resp.usage and resp.usage.prompt_tokens_details
    assert resp.usage.prompt_tokens_details.cached_tokens == 0


def test_stop_closes_port() -> None:
    srv = FakeOpenAIServer().start()
    c = OpenAI(api_key="k", base_url=srv.url, max_retries=0)
    assert c.models.list().data
    srv.stop()
    with pytest.raises(openai.APIConnectionError):
        c.models.list()


def test_a_request_delayed_across_a_reset_is_dropped_not_counted(server, client) -> None:
    """A test that ends while its request is still delayed must not leak that request's
    answer into the next test's counts (seen: an embedding counted after reset())."""
    import threading

    server.delay_next(0.3)
    outcome: list[str] = []

    def late() -> None:
        try:
            client.embeddings.create(model="text-embedding-3-small", input="late", timeout=5)
            outcome.append("answered")
        except openai.APIConnectionError:
            outcome.append("dropped")

    caller = threading.Thread(target=late)
    caller.start()
    while server.request_count == 0:
        threading.Event().wait(0.01)
    server.reset()  # the next test begins
    caller.join(timeout=10)

    assert outcome == ["dropped"]
    assert (server.request_count, server.embedding_count, server.requests) == (0, 0, [])
