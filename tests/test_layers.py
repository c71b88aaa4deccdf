"""The storage layer's one rule (llm_ledger/store/__init__.py): it imports only the modules below it.

The store never reaches up into the call pipeline, the reports or the CLI; a module that needs
to is in the wrong folder. Checked on the source (ast), so no import order or lazy import hides it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import llm_ledger.store

STORE = Path(llm_ledger.store.__file__).parent
BELOW = {"errors", "keys", "log", "records", "policy", "process"}


def imported_package_modules(path: Path) -> set[str]:
    """The llm_ledger modules outside store/ that ``path`` imports, by top-level name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                continue  # from . / from .x: inside store/
            if node.level >= 2:
                parts = (node.module or "").split(".") if node.module else []
            elif node.module and node.module.split(".")[0] == "llm_ledger":
                parts = node.module.split(".")[1:]
            else:
                continue
            if parts and parts[0] == "store":
                continue
            found.update([parts[0]] if parts else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "llm_ledger" and len(parts) > 1 and parts[1] != "store":
                    found.add(parts[1])
    return found


def test_the_store_imports_only_the_modules_below_it() -> None:
    above = {
        path.name: sorted(imported_package_modules(path) - BELOW)
        for path in sorted(STORE.glob("*.py"))
    }
    assert {name: mods for name, mods in above.items() if mods} == {}


def test_the_store_package_itself_imports_nothing() -> None:
    tree = ast.parse((STORE / "__init__.py").read_text(encoding="utf-8"))
    imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert [ast.unparse(n) for n in imports] == ["from __future__ import annotations"]
