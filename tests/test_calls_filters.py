"""``llm-ledger calls --tag/--namespace`` (and ``calllog.find_calls``): exact rows on every engine."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import llm_ledger
from llm_ledger import calllog
from llm_ledger.cli import app
from llm_ledger.store import repository

from .conftest import msgs


def _ids(*args: str) -> list[int]:
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return [row["id"] for row in json.loads(result.stdout)]


@pytest.fixture
def tagged(any_db: str, api) -> str:
    """Four calls: 1 alpha/exp=1 (run r1), 2 beta in ns2, 3 alpha/exp=2 in ns2, 4 untagged."""
    client = llm_ledger.OpenAIClient(cache_file_name=any_db)
    with llm_ledger.scope(run="r1", tags={"team": "alpha", "exp": "1"}):
        client.send_message(msgs("one"), temperature=0)
    with llm_ledger.scope(tags={"team": "beta"}, namespace="ns2"):
        client.send_message(msgs("two"), temperature=0)
    with llm_ledger.scope(tags={"team": "alpha", "exp": "2"}, namespace="ns2"):
        client.send_message(msgs("three"), temperature=0)
    client.send_message(msgs("four"), temperature=0)
    repository.close_all()
    return any_db


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], [4, 3, 2, 1]),
        (["--tag", "team=alpha"], [3, 1]),
        (["--tag", "team=alpha", "--tag", "exp=2"], [3]),  # every tag given
        (["--tag", "team=alpha", "--tag", "exp=3"], []),
        (["--tag", "team=gamma"], []),
        (["--tag", "exp=1", "--run", "r1"], [1]),
        (["--namespace", "ns2"], [3, 2]),
        (["--namespace", ""], [4, 1]),  # the default namespace is the empty one
        (["--namespace", "default"], []),
        (["--namespace", "ns2", "--tag", "team=beta"], [2]),
        (["--namespace", "ns2", "--model", "gpt-4o"], []),
        (["--namespace", "ns2", "--status", "ok", "--cache", "miss"], [3, 2]),
        (["--tag", "team=alpha", "--search", "THREE"], [3]),
    ],
)
def test_calls_tag_and_namespace_filters(tagged: str, args: list[str], expected: list[int]) -> None:
    assert _ids("--db", tagged, "calls", *args) == expected


def test_find_calls_takes_the_same_tags_and_namespace(tagged: str) -> None:
    rows = calllog.find_calls(tagged, tags={"team": "alpha"}, namespace="ns2")
    assert [(r["id"], r["prompt"]) for r in rows] == [(3, "three")]
    assert [r["id"] for r in calllog.find_calls(tagged, tags=[("exp", "1")])] == [1]


def test_calls_rejects_a_malformed_tag_with_exit_code_2(tagged: str) -> None:
    result = CliRunner().invoke(app, ["--db", tagged, "calls", "--tag", "team"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --tag 'team': expected NAME=VALUE, for example --tag team=search\n"
    )
