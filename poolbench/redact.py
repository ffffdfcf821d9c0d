"""Masking of secrets before anything reaches a log, a report or run.json.

Three kinds of secret are masked: passwords inside URLs and conninfo strings (by shape),
values stored under a secret-looking name (`looks_secret`: PASSWORD, SECRET, TOKEN, KEY, …),
and literal values the run registered with `add_secret` (the database passwords, whatever a
bench file took from the environment with `${VAR}`, a variant's secret-named settings), which
are masked wherever they appear, whatever surrounds them.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

MASK = "***"
_SECRET_KEYS = re.compile(r"pass(word|wd)?|secret|token|key|credential", re.IGNORECASE)
MIN_SECRET_LENGTH = 4  # shorter literals would mask ordinary words and numbers
_known: set[str] = set()
_known_pattern: re.Pattern[str] | None = None
_URL_IN_TEXT = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@\s]*)(@)", re.IGNORECASE)
_DSN_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)
# SQL: CREATE/ALTER ROLE ... PASSWORD 'x' (a failed statement's text reaches the server log)
_SQL_PASSWORD = re.compile(r"(\bPASSWORD\s+)(E?'(?:[^']|'')*'?)", re.IGNORECASE)


def looks_secret(name: str) -> bool:
    """Whether a setting's name says its value is a secret (SECRET_KEY, POSTGRES_PASSWORD, …)."""
    return bool(_SECRET_KEYS.search(name))


def add_secret(value: str) -> None:
    """Mask `value` (and its URL-encoded form) in every text masked from now on, in this process."""
    global _known_pattern
    if len(value) < MIN_SECRET_LENGTH:
        return
    _known.update({value, quote(value, safe="")})
    alternatives = sorted(_known, key=len, reverse=True)  # longest first: no partial masks
    _known_pattern = re.compile("|".join(map(re.escape, alternatives)))


def _mask_known(text: str) -> str:
    return _known_pattern.sub(MASK, text) if _known_pattern is not None else text


def mask_url(url: str) -> str:
    """Return `url` (or a key=value conninfo) with its password replaced, nothing else."""
    if "://" not in url:
        return mask_text(url)
    parts = urlsplit(url)
    if parts.password is None:
        return _mask_known(url)
    netloc = parts.netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
    return _mask_known(urlunsplit(parts._replace(netloc=netloc)))


def mask_text(text: str) -> str:
    """Mask passwords in free text: registered secrets, URLs with credentials,
    `password=...` pairs and SQL `PASSWORD '...'` literals."""
    text = _URL_IN_TEXT.sub(rf"\g<1>{MASK}\g<3>", text)
    text = _SQL_PASSWORD.sub(rf"\g<1>{MASK}", text)
    return _mask_known(_DSN_PASSWORD.sub(rf"\g<1>{MASK}", text))


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
