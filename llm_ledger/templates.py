"""``LLMCall``: mustache templates rendered into messages, sent through ``client()``.

Templates are files in the template directory (``template_dir`` setting,
LLM_LEDGER_TEMPLATE_DIR, default ``./prompts``), found by name as given or with a
``.mustache``, ``.md`` or ``.txt`` ending. The template names are recorded on
the call's ledger row (``template`` column: "system" or "system+user").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import chevron

from . import config as cfg
from .errors import ConfigError
from .scope import scope

SUFFIXES = ("", ".mustache", ".md", ".txt")


def find_template(name: str, template_dir: str | Path | None = None) -> Path:
    base = Path(template_dir or cfg.settings().template_dir)
    for suffix in SUFFIXES:
        path = base / (name + suffix)
        if path.is_file():
            return path
    raise ConfigError(
        f"template {name!r} not found in {base.absolute()} (tried endings {', '.join(s or 'none' for s in SUFFIXES)}); "
        "set template_dir / LLM_LEDGER_TEMPLATE_DIR"
    )


def render(name: str, values: dict[str, Any], template_dir: str | Path | None = None) -> str:
    return chevron.render(find_template(name, template_dir).read_text(encoding="utf-8"), values)


class LLMCall:
    """One templated LLM call: system (and optional user) template plus model parameters."""

    def __init__(
        self, system_template_name: str, user_template_name: str | None = None, **model_params: Any
    ) -> None:
        self.system_template_name = system_template_name
        self.user_template_name = user_template_name
        self.model_params = model_params
        self.messages: list[dict[str, str]] | None = None
        self.model_output: str | None = None
        self.template_dir: str | None = model_params.pop("template_dir", None)

    @property
    def template(self) -> str:
        names = [self.system_template_name] + (
            [self.user_template_name] if self.user_template_name else []
        )
        return "+".join(names)

    def call(self, **rendering_configs: Any) -> str | None:
        from .registry import client

        self.messages = [
            {
                "role": "system",
                "content": render(self.system_template_name, rendering_configs, self.template_dir),
            }
        ]
        if self.user_template_name:
            self.messages.append(
                {
                    "role": "user",
                    "content": render(
                        self.user_template_name, rendering_configs, self.template_dir
                    ),
                }
            )
        with scope(template=self.template):
            message = client().send_message(self.messages, **self.model_params)
        self.model_output = None if message is None else message.get("content")
        return self.model_output

    def __repr__(self) -> str:
        return f"LLMCall(template={self.template!r}, model_params={self.model_params!r})"
