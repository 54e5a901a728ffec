"""Paths into JSON documents (JMESPath), with a fast path for a plain key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

from pipeline_check.core.errors import ConfigError


def compile_path(setting: str, expression: str) -> Callable[[Any], Any]:
    """A getter for ``expression`` (``t``, ``data``, ``result.items[*]``); None where it finds nothing."""
    try:
        return _compiled(expression)
    except ValueError as exc:
        raise ConfigError(setting, expression, str(exc), "e.g. data or result.items") from None


def check_path(expression: str) -> str:
    """``expression`` if it compiles (a pydantic validator: ``ValueError`` otherwise)."""
    _compiled(expression)
    return expression


def _compiled(expression: str) -> Callable[[Any], Any]:
    if expression.isidentifier():
        return lambda doc: doc.get(expression) if isinstance(doc, dict) else None
    try:
        return jmespath.compile(expression).search
    except JMESPathError as exc:
        raise ValueError(f"is not a JMESPath expression ({' '.join(str(exc).split())})") from None
