"""Reading a canary tag out of a stage's record: a JMESPath to the field, and, where the stage reformats ids, a
pattern or a regex that finds the tag's digits inside the text.

``tag_pattern = "BINANCE-{tag}"`` matches the whole value, ``{tag}`` standing for the tag's decimal digits;
``tag_regex = "canary-(\\d+)"`` is searched in the value and its one group (or the group named ``tag``) holds
the digits. Without either, the field holds the tag itself (a number, or a text of digits).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, model_validator

from pipeline_check.core.jsonpath import check_path, compile_path
from pipeline_check.core.plugins import PluginSettings

TagReader = Callable[[Any], int | None]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """``BINANCE-{tag}`` -> ``^BINANCE\\-(?P<tag>[0-9]+)$``; ValueError unless ``{tag}`` is its one placeholder."""
    try:
        parts = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise ValueError(f"is not a pattern ({exc}); write the id with {{tag}} where the tag's digits are") from None
    names = [name for _, name, _, _ in parts if name is not None]
    if names != ["tag"]:
        raise ValueError("must hold {tag} once and no other placeholder, e.g. BINANCE-{tag}")
    text = "".join(re.escape(literal) + ("(?P<tag>[0-9]+)" if name else "") for literal, name, _, _ in parts)
    return re.compile(f"^{text}$")


def _regex(expression: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(expression)
    except re.error as exc:
        raise ValueError(f"is not a regular expression ({exc})") from None
    if compiled.groups != 1 and "tag" not in compiled.groupindex:
        raise ValueError(r"needs one group holding the tag's digits (or a group named tag), e.g. canary-(\d+)")
    return compiled


def check_pattern(value: str) -> str:
    _pattern_regex(value)
    return value


def check_regex(value: str) -> str:
    _regex(value)
    return value


class TagFormSettings(PluginSettings):
    """How a stage writes the tag when not as itself: a pattern or a regex around its digits."""

    tag_pattern: Annotated[str, AfterValidator(check_pattern)] | None = None
    tag_regex: Annotated[str, AfterValidator(check_regex)] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> TagFormSettings:
        if self.tag_pattern is not None and self.tag_regex is not None:
            raise ValueError("tag_pattern and tag_regex are both set; set one of them")
        return self


class TagSettings(TagFormSettings):
    """The settings of a stage whose records carry the tag in a field (``tag_field``, set by each probe)."""

    tag_field: Annotated[str, AfterValidator(check_path)]


def text_tag(pattern: str | None, regex: str | None) -> Callable[[str], int | None]:
    """A getter for the tag in a text by ``tag_pattern`` (matching the whole text) or ``tag_regex`` (searched)."""
    if pattern is not None:
        compiled = _pattern_regex(pattern)
        find = compiled.match
    else:
        compiled = _regex(regex or "")
        find = compiled.search
    group: str | int = "tag" if "tag" in compiled.groupindex else 1

    def read(value: str) -> int | None:
        found = find(value)
        return None if found is None else _number(found.group(group))

    return read


def tag_reader(settings: TagSettings, where: str) -> TagReader:
    """A getter for the tag in a record (a decoded JSON or Avro document); None where it finds none."""
    field = compile_path(f"{where}.tag_field", settings.tag_field)
    if settings.tag_pattern is None and settings.tag_regex is None:
        return lambda record: _number(field(record))
    text = text_tag(settings.tag_pattern, settings.tag_regex)

    def read(record: Any) -> int | None:
        value = field(record)
        return text(value) if isinstance(value, str) else None

    return read


def _number(value: Any) -> int | None:
    """A tag as an int: an int, or a text of decimal digits (a float never holds an int64 tag exactly)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None
