"""What a fresh process imports: a cheap ``import llm_ledger`` and ``llm-ledger --help``.

Timing never decides a test (the figures are in docs/benchmarks.md); these check WHAT is
imported, in a subprocess, so a module-level import of a heavy dependency shows up here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("sqlalchemy", "alembic", "openai", "tiktoken", "genai_prices")


def run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "100"},
    )
    return result.stdout


def imported_after(code: str) -> list[str]:
    out = run(
        textwrap.dedent(code)
        + f"\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    return json.loads(out.splitlines()[-1])


def test_import_llm_ledger_imports_no_heavy_dependency() -> None:
    assert imported_after("import llm_ledger") == []


def test_reading_settings_and_errors_imports_no_heavy_dependency() -> None:
    code = """
    import llm_ledger
    from llm_ledger import LedgerError, default, scope, settings
    with scope(run="x"):
        pass
    print(settings().model, default["cache_api_calls"], LedgerError.__name__)
    """
    assert imported_after(code) == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ("LLM_LEDGER_MAX_ATTEMPTS=abc", "LLM_LEDGER_MAX_ATTEMPTS='abc': expected int"),
        (
            "LLM_LEDGER_MODE=Replay",
            "LLM_LEDGER_MODE='Replay': must be one of record, replay, refresh",
        ),
    ],
)
def test_a_bad_setting_in_the_environment_fails_its_first_use_not_the_import(
    env: str, message: str
) -> None:
    """Settings were read when llm_ledger.config was imported, so a bad LLM_LEDGER_* value
    made ``import llm_ledger`` (test collection, a type checker, a CLI's --help) raise.
    Now the first look at the settings raises, with the same message."""
    name, value = env.split("=")
    code = """
    import llm_ledger, llm_ledger.testing
    from llm_ledger import ConfigError
    print("imported")
    try:
        llm_ledger.default["model"]
    except ConfigError as e:
        print(e)
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", name: value},
    )
    assert (result.returncode, result.stdout) == (0, f"imported\n{message}\n"), result.stderr


def test_a_lazy_name_imports_its_module_on_first_use() -> None:
    code = """
    import llm_ledger
    from llm_ledger import OpenAIClient, open_ledger
    from llm_ledger.clients import OpenAIClient as Direct
    assert OpenAIClient is Direct and llm_ledger.OpenAIClient is Direct
    assert open_ledger.__module__ == "llm_ledger.store.repository"
    """
    assert "openai" in imported_after(code)


def test_scope_stays_the_function_after_its_submodule_is_imported() -> None:
    code = """
    import llm_ledger
    import llm_ledger.scope
    import llm_ledger.clients
    print(callable(llm_ledger.scope), type(llm_ledger.scope).__name__)
    """
    assert run(code).split() == ["True", "function"]


def test_every_public_name_resolves() -> None:
    code = """
    import llm_ledger
    missing = [name for name in llm_ledger.__all__ if not hasattr(llm_ledger, name)]
    print(missing, set(llm_ledger.__all__) <= set(dir(llm_ledger)))
    """
    assert run(code).split("\n")[0] == "[] True"


def test_unknown_attribute_is_an_attribute_error() -> None:
    code = """
    import llm_ledger
    try:
        llm_ledger.no_such_name
    except AttributeError as exc:
        print(exc)
    """
    assert run(code).strip() == "module 'llm_ledger' has no attribute 'no_such_name'"


HELP = """
import sys
from llm_ledger.cli import main
sys.argv = ["llm-ledger", "--help"]
try:
    main()
except SystemExit:
    pass
"""


def test_cli_help_imports_no_heavy_dependency() -> None:
    assert imported_after(HELP) == []


def test_cli_help_lists_the_same_commands_and_help_as_the_imported_modules() -> None:
    lazy = run(HELP)
    eager = run("from llm_ledger.cli import admin, calls, costs, sql, transfer\n" + HELP)
    assert "Commands:" in lazy and "import-pickle" in lazy
    assert lazy == eager


def test_a_command_imports_only_its_own_module() -> None:
    code = """
    import sys
    from typer.testing import CliRunner
    from llm_ledger.cli import app
    result = CliRunner().invoke(app, ["stats", "--help"])
    assert result.exit_code == 0, result.output
    print(sorted(m for m in sys.modules if m.startswith("llm_ledger.cli.")))
    """
    assert run(code).strip() == "['llm_ledger.cli.costs', 'llm_ledger.cli.output']"


def test_first_token_count_imports_no_tiktoken() -> None:
    code = """
    from llm_ledger import tokens
    messages = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog."}]
    print(tokens.count_message_tokens(messages, "gpt-4o"), tokens.count_text_tokens("hi", "gpt-4"))
    """
    out = run(textwrap.dedent(code) + "\nimport sys\nprint('tiktoken' in sys.modules)\n")
    assert out.split() == ["17", "1", "False"]
