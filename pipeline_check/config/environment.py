"""``${NAME}`` and ``${NAME:-default}`` in pipeline.toml, replaced from the environment before validation
(``$$`` is a literal ``$``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline_check.core.errors import ConfigError

_VAR = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\})")


def substitute(text: str, env: Mapping[str, str], where: str) -> str:
    """Replace ``${NAME}`` / ``${NAME:-default}``; an unset variable without default is an error."""

    def repl(m: re.Match[str]) -> str:
        name = m["name"]
        if name is None:
            return "$"
        if name in env:
            return env[name]
        if m["default"] is not None:
            return m["default"]
        raise ConfigError(
            where, m[0], f"environment variable {name} is not set", f"export {name}=... or write ${{{name}:-default}}"
        )

    return _VAR.sub(repl, text)


def substitute_tree(node: Any, env: Mapping[str, str], path: str) -> Any:
    if isinstance(node, str):
        return substitute(node, env, path)
    if isinstance(node, dict):
        return {k: substitute_tree(v, env, f"{path}.{k}" if path else k) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute_tree(v, env, f"{path}[{i}]") for i, v in enumerate(node)]
    return node
