"""Paths into JSON documents (JMESPath), with a fast path for a plain key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

from pipeline_check.errors import ConfigError


def compile_path(setting: str, expression: str) -> Callable[[Any], Any]:
    """A getter for ``expression`` (``t``, ``data``, ``result.items[*]``); None where it finds nothing."""
    if expression.isidentifier():
        return lambda doc: doc.get(expression) if isinstance(doc, dict) else None
    try:
        compiled = jmespath.compile(expression)
    except JMESPathError as exc:
        raise ConfigError(
            setting, expression, f"is not a JMESPath expression ({exc})", "e.g. data or result.items"
        ) from None
    return compiled.search
