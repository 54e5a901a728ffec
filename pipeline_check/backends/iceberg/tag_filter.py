"""Which rows of a table are one run's canaries, and which files may hold them: the predicate on the tag column
that file statistics are pruned with.

The tag column holds the tag itself (a long or an int), or, with ``tag_pattern``/``tag_regex``, text the tag's
digits sit in (``BINANCE-<tag>``, ``<exchange>:<tag>``). A run's tags are a range ``[lo, hi]`` either way:

- an integer column: ``lo <= tag <= hi``;
- ``tag_pattern = "BINANCE-{tag}"``: every canary tag has 19 digits (bit 62 is set, bit 63 never), so the texts of
  a run's tags sort between ``BINANCE-<lo>`` and ``BINANCE-<hi>`` (plus the pattern's suffix): a range on text;
- ``tag_regex``: what every match starts with (``^BINANCE-`` and, when the tag's group follows at once, the digits
  the run's tags share), a ``StartsWith``; a regex without a literal start prunes nothing (every file is read).

Rows the predicate keeps are then read with the pattern or regex, and only tags in the range count. Iceberg keeps
string statistics truncated (16 characters unless ``write.metadata.metrics.*`` says otherwise), so text prunes a
file only when its tags differ from the run's within those characters: runs seconds apart share a file's range.
"""

from __future__ import annotations

import string
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.conversions import from_bytes
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    GreaterThanOrEqual,
    LessThanOrEqual,
    StartsWith,
)
from pyiceberg.expressions.visitors import _InclusiveMetricsEvaluator
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import IntegerType, LongType, PrimitiveType, StringType

from pipeline_check.canary.tag_readers import text_tag
from pipeline_check.core.errors import ConfigError

Selected = tuple[list[int], list[int], list[dict[str, Any]]]  # positions, tags, the rows' values
_SPECIAL = set(".^$*+?{}[]|()\\")


class TagFilter:
    """The rows of ``column`` holding a tag in ``[lo, hi]``, as the tag itself or inside text (``pattern``,
    ``regex``); ``where`` names the stage's settings in errors."""

    def __init__(
        self, column: str, lo: int, hi: int, *, pattern: str | None = None, regex: str | None = None, where: str = ""
    ) -> None:
        self.column = column
        self.lo = lo
        self.hi = hi
        self.where = where or "stages.iceberg"
        self.text = pattern is not None or regex is not None
        self._read = text_tag(pattern, regex) if self.text else None
        self._prefix = ""  # every text of the run's tags starts with it
        self._bounds: tuple[str, str] | None = None  # ... and sorts between these (a pattern)
        if pattern is not None:
            (before, _, _, _), *rest = [p for p in string.Formatter().parse(pattern)]
            after = "".join(literal for literal, _, _, _ in rest)
            self._bounds = (f"{before}{lo}", f"{before}{hi}{after}")
            self._prefix = before + _shared(str(lo), str(hi))
        elif regex is not None:
            literal, group_next = literal_start(regex)
            self._prefix = literal + (_shared(str(lo), str(hi)) if group_next else "")
        self._evaluators: dict[int, _InclusiveMetricsEvaluator] = {}  # per schema id (checked against it)

    def expression(self) -> BooleanExpression:
        """The predicate a scan (or a delete) pushes down; it may keep rows that are not canaries, never drops one."""
        column = self.column
        if not self.text:
            return And(_predicate(GreaterThanOrEqual, column, self.lo), _predicate(LessThanOrEqual, column, self.hi))
        if self._bounds is not None:
            lower, upper = self._bounds
            return And(_predicate(GreaterThanOrEqual, column, lower), _predicate(LessThanOrEqual, column, upper))
        return _predicate(StartsWith, column, self._prefix) if self._prefix else AlwaysTrue()

    @property
    def prunes(self) -> bool:
        """False for a regex without a literal start: every file is read."""
        return not self.text or bool(self._prefix)

    def check(self, schema: Schema, table: str) -> None:
        """The column exists and has the type the settings expect (an integer, or text with a pattern or regex)."""
        field = next((f for f in schema.fields if f.name == self.column), None)
        if field is None:
            return  # the probe names missing columns with the others
        kind = field.field_type
        if self.text and not isinstance(kind, StringType):
            raise ConfigError(
                f"{self.where}.tag_column", self.column, f"is a {kind} column of {table}, not text",
                "drop tag_pattern/tag_regex for a column that holds the tag as a number",
            )  # fmt: skip
        if not self.text and not isinstance(kind, IntegerType | LongType):
            fix = "name the column that carries the canary tag (an integer: long or int)"
            if isinstance(kind, StringType):
                fix += ', or set tag_pattern ("BINANCE-{tag}") or tag_regex for text that holds it'
            raise ConfigError(f"{self.where}.tag_column", self.column, f"is a {kind} column of {table}", fix)

    def may_hold(self, table: Table, file: DataFile) -> bool:
        """False when the file's statistics prove it holds no tag of the range (data and delete files alike)."""
        schema = table.metadata.schema()
        evaluator = self._evaluators.get(schema.schema_id)
        if evaluator is None:
            self.check(schema, ".".join(table.name()))
            evaluator = self._evaluators[schema.schema_id] = _InclusiveMetricsEvaluator(schema, self.expression())
        if not self.text:
            field = schema.find_field(self.column)
            kind = cast(PrimitiveType, field.field_type)  # an integer type, checked
            lower = (file.lower_bounds or {}).get(field.field_id)
            upper = (file.upper_bounds or {}).get(field.field_id)
            if lower is not None and int(from_bytes(kind, lower)) > self.hi:
                return False
            return upper is None or int(from_bytes(kind, upper)) >= self.lo
        return evaluator.eval(file)

    def select(self, rows: pa.Table) -> Selected | None:
        """The positions, tags and values of the rows whose tag is in the range; None when there are none."""
        values = rows.column(self.column)
        if not self.text:
            mask = pc.and_(pc.greater_equal(values, self.lo), pc.less_equal(values, self.hi))
        elif self._bounds is not None:
            mask = pc.and_(pc.greater_equal(values, self._bounds[0]), pc.less_equal(values, self._bounds[1]))
        elif self._prefix:
            mask = pc.starts_with(values, self._prefix)
        else:
            mask = pc.is_valid(values)
        positions = pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()
        if not positions:
            return None
        kept = rows.take(positions).to_pylist()
        tags: list[int | None] = [
            row[self.column] if self._read is None else self._read(row[self.column]) for row in kept
        ]
        chosen = [i for i, tag in enumerate(tags) if tag is not None and self.lo <= tag <= self.hi]
        if not chosen:
            return None
        return [positions[i] for i in chosen], [int(tags[i] or 0) for i in chosen], [kept[i] for i in chosen]


def _predicate(kind: Any, column: str, value: object) -> BooleanExpression:
    """``kind(column, value)``: pyiceberg's predicates take a column name and a literal (their typing does not)."""
    return cast(BooleanExpression, kind(column, value))


def _shared(a: str, b: str) -> str:
    """The longest common start of two texts."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def literal_start(regex: str) -> tuple[str, bool]:
    """The text every match of an anchored ``regex`` starts with (``^BINANCE-(\\d+)`` -> ``BINANCE-``), and
    whether the tag's group comes right after it; ``("", False)`` when nothing is certain (no ``^``, an
    alternation, flags)."""
    if not regex.startswith("^") or "|" in regex:
        return "", False
    out: list[str] = []
    i = 1
    while i < len(regex):
        char = regex[i]
        if char == "\\":
            escaped = regex[i + 1 : i + 2]
            if not escaped or escaped.isalnum():
                return "".join(out), False  # \d, \w, \b...: no longer literal
            literal, step = escaped, 2
        elif char in _SPECIAL:
            break
        else:
            literal, step = char, 1
        following = regex[i + step : i + step + 1]
        if following in ("*", "?", "{"):
            return "".join(out), False  # optional or counted: not certain
        out.append(literal)
        i += step
        if following == "+":
            return "".join(out), False
    rest = regex[i:]
    named = "(?P<tag>" in regex  # else the regex's one group holds the tag
    tag_group = rest.startswith("(?P<tag>") if named else rest.startswith("(") and not rest.startswith("(?")
    return "".join(out), tag_group
