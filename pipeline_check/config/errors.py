"""Config errors as users read them: one line naming the setting, the value and the fix, with a "did you
mean" hint for a misspelt key; pydantic's validation errors turned into that form, secrets masked."""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ValidationError

from pipeline_check.core.errors import ConfigError
from pipeline_check.core.redaction import redact


def choices(value: str, known: list[str]) -> str:
    close = difflib.get_close_matches(value, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}known: {', '.join(known)}"


def _model_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class that owns the field at ``loc`` (to suggest keys for a misspelt one)."""
    options: list[type[BaseModel]] = [root]
    for part in loc[:-1]:
        field = next((m.model_fields[str(part)] for m in options if str(part) in m.model_fields), None)
        if field is None:
            return None
        annotation = field.annotation
        args = getattr(annotation, "__args__", (annotation,))
        options = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    return options[0] if len(options) == 1 else None


def config_error(
    exc: ValidationError, file: str, prefix: tuple[str, ...] = (), *, root: type[BaseModel]
) -> ConfigError:
    """The one-line error of a validation of ``root`` (``prefix``: where its section sits in ``file``)."""
    errors = exc.errors()
    # A misspelt key also leaves its real one missing: report the misspelling, which carries the hint.
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(error["loc"])
    setting = f"{file}: " + (".".join(str(p) for p in (*prefix, *loc)) or "(top level)")
    value = redact(error.get("input"), loc[-1] if loc else None)  # a misspelt secret key must not leak
    if error["type"] == "extra_forbidden":
        owner = _model_at(root, loc)
        known = sorted(f.alias or n for n, f in owner.model_fields.items()) if owner else []
        return ConfigError(setting, value, "is not a known setting", choices(str(loc[-1]), known))
    if error["type"] == "missing":
        return ConfigError(
            setting, None, "is required", "add it (`pipeline-check example-config` prints a complete pipeline.toml)"
        )
    message = error["msg"].removeprefix("Value error, ")
    return ConfigError(setting, value, message, "see the config reference in README.md")
