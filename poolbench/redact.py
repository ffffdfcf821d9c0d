"""Masking of secrets before anything reaches a log, a report or run.json."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
_SECRET_KEYS = re.compile(r"pass(word)?|secret|token", re.IGNORECASE)
_URL_IN_TEXT = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@\s]*)(@)", re.IGNORECASE)
_DSN_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)
# SQL: CREATE/ALTER ROLE ... PASSWORD 'x' (a failed statement's text reaches the server log)
_SQL_PASSWORD = re.compile(r"(\bPASSWORD\s+)(E?'(?:[^']|'')*'?)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """Return `url` (or a key=value conninfo) with its password replaced, nothing else."""
    if "://" not in url:
        return mask_text(url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def mask_text(text: str) -> str:
    """Mask passwords in free text: URLs with credentials, `password=...` pairs and SQL
    `PASSWORD '...'` literals."""
    text = _URL_IN_TEXT.sub(rf"\g<1>{MASK}\g<3>", text)
    text = _SQL_PASSWORD.sub(rf"\g<1>{MASK}", text)
    return _DSN_PASSWORD.sub(rf"\g<1>{MASK}", text)


def mask_tree(value: Any) -> Any:
    """Mask secrets in a JSON-like structure: values of secret-named keys, and any URL."""
    if isinstance(value, dict):
        return {
            key: MASK if _SECRET_KEYS.search(str(key)) and item else mask_tree(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_tree(item) for item in value]
    if isinstance(value, str):
        return mask_text(value)
    return value
