"""Secret masking, the one rule: values under secret-looking keys, and passwords inside URLs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
_SECRET_KEY = re.compile(r"pass|secret|token|credential|key|auth|headers", re.IGNORECASE)
# scheme://user:password@host -> scheme://user:***@host (also a bare user@ with a token as user name)
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@\s:]*)(?::(?P<password>[^/@\s]*))?@")


def is_secret_key(key: object) -> bool:
    """A setting whose name says it holds a secret (``token``, ``s3.secret-access-key``, ``headers``...)."""
    return bool(_SECRET_KEY.search(str(key)))


def mask_text(text: str) -> str:
    """``text`` with the user-info of every URL in it masked."""

    def repl(m: re.Match[str]) -> str:
        if m["password"] is None:
            return f"{m['scheme']}{MASK}@" if m["user"] else m[0]
        return f"{m['scheme']}{m['user']}:{MASK}@"

    return _USERINFO.sub(repl, text)


def redact(value: Any, key: object = None) -> Any:
    """``value`` (JSON-like) with secrets masked: everything under a secret key, URL passwords anywhere."""
    if key is not None and is_secret_key(key):
        return {k: MASK for k in value} if isinstance(value, Mapping) else MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value
