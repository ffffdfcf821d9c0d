"""Masking of secrets before anything reaches a terminal, a log, a report or run.json.

Two layers, so that a password is hidden however it is written:

1. **Known secrets.** Every password poolbench is given or makes (`--database-url`,
   `DATABASE_URL`, the embedded server's and the app role's generated passwords, whatever a
   bench file took from the environment with `${VAR}`, a variant's secret-named settings) is
   registered with `add_secret` / `register_url`; `mask_text` replaces each registered value
   (and its percent-encoded forms) wherever it appears, whatever surrounds it: an unencoded
   space, `/`, `#`, `?` or `@` cannot hide it.
2. **Shapes of secrets.** For text that holds secrets nobody registered (an app's log, a run
   read back later): the password of a URL's userinfo (up to the *last* `@` of the URL, so
   unencoded reserved characters are masked too; inside quotes also across spaces),
   `password=` in a URL's query string, and `password=` / `PGPASSWORD=` in key=value
   conninfo, quoted or not, and SQL `PASSWORD '...'` literals (a failed CREATE ROLE in a
   server log).

In JSON-like data (`mask_tree`), values stored under a secret-looking name (`looks_secret`:
PASSWORD, SECRET, TOKEN, KEY, …) are masked whole. Over-masking is accepted; a leak is not.
`install` wires layer 1 and 2 into Python's logging (every record, whichever logger) — the CLI
calls it once at start, and prints every error through `mask_text`.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote

MASK = "***"
# A registered secret shorter than this is not replaced literally (it would mask every
# occurrence of, say, "pw" in a log); such a password is still masked by its shape.
MIN_SECRET_LENGTH = 4
_SECRET_KEYS = re.compile(r"pass(word|wd)?|secret|token|key|credential", re.IGNORECASE)
_SCHEME = r"\b[a-z][a-z0-9+.-]*://"
# userinfo user:password@host — the password runs (across spaces, `/`, `#`, `?`, `@`) to the
# first `@` followed by a host[:port] and the end of the authority
_URL_IN_TEXT = re.compile(
    rf"({_SCHEME}[^:/@\s'\"]*:)([^\n]*?)(@)(?=[\w.\[\]:-]*(?:[/?#\s'\",;)]|$))",
    re.IGNORECASE,
)
# the same inside quotes, where an unencoded space may sit in the password
_QUOTED_URL = re.compile(rf"(['\"])({_SCHEME}[^:/@\s'\"]*:)([^'\"\n]*)(@)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&](?:pg)?password=)([^&#\s'\"]*)", re.IGNORECASE)
# key=value conninfo and environment dumps: password=, PGPASSWORD=, POSTGRES_PASSWORD=
_DSN_PASSWORD = re.compile(
    r"((?<![?&\w])\w*password\s*=\s*)"
    # one shell-like word: quoted and unquoted pieces glued together ('a b', 'x'"'"'y')
    r"((?:'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|[^\s'\"])+)",
    re.IGNORECASE,
)

# SQL: CREATE/ALTER ROLE ... PASSWORD 'x' (a failed statement's text reaches the server log)
_SQL_PASSWORD = re.compile(r"(\bPASSWORD\s+)(E?'(?:[^']|'')*'?)", re.IGNORECASE)
# What every shape above contains (matched as they are, case folding included): a text
# without it, most lines of an app's log, skips their five passes.
_ANY_SHAPE = re.compile(r"://|password", re.IGNORECASE)

_known: set[str] = set()
_known_pattern: re.Pattern[str] | None = None
_lock = threading.Lock()


# --------------------------------------------------------------------------- known secrets


def looks_secret(name: str) -> bool:
    """Whether a setting's name says its value is a secret (SECRET_KEY, POSTGRES_PASSWORD, …)."""
    return bool(_SECRET_KEYS.search(name))


def add_secret(value: str | None) -> None:
    """Mask `value` (and its percent-encoded forms) in every text masked from now on, in this
    process."""
    global _known_pattern
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        _known.update({value, quote(value, safe=""), quote_plus(value), unquote(value)})
        alternatives = sorted(_known, key=len, reverse=True)  # longest first: no partial masks
        _known_pattern = re.compile("|".join(map(re.escape, alternatives)))


def register_url(url: str | None) -> None:
    """Register the password(s) a URL or conninfo carries, however malformed it is."""
    for password in url_passwords(url or ""):
        add_secret(password)


def forget_secrets() -> None:
    """Drop every registered secret (tests; a long-lived process between runs)."""
    global _known_pattern
    with _lock:
        _known.clear()
        _known_pattern = None


def _mask_known(text: str) -> str:
    pattern = _known_pattern
    return pattern.sub(MASK, text) if pattern is not None else text


def url_passwords(url: str) -> list[str]:
    """Every password in a URL or conninfo: userinfo, `?password=`, `password=` pairs."""
    found = []
    userinfo = split_userinfo(url)
    if userinfo is not None and userinfo[2] is not None:
        found.append(userinfo[2])
    found += [m.group(2) for m in _QUERY_PASSWORD.finditer(url)]
    if "://" not in url:
        found += [_unquote_dsn(m.group(2)) for m in _DSN_PASSWORD.finditer(url)]
    return [p for p in found if p]


def _unquote_dsn(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


# --------------------------------------------------------------------------- URLs


def split_userinfo(url: str) -> tuple[str, str, str | None, str] | None:
    """`scheme://`, user, password (None if absent) and the rest after the last `@`.

    The userinfo ends at the *last* `@`: a password with an unencoded `/`, `#`, `?`, `@` or
    space is taken whole (libpq and urllib would each cut it somewhere else). None when
    `url` has no scheme or no userinfo.
    """
    match = re.match(_SCHEME, url, re.IGNORECASE)
    if match is None:
        return None
    rest = url[match.end() :]
    at = rest.rfind("@")
    if at < 0:
        return None
    userinfo, after = rest[:at], rest[at + 1 :]
    user, colon, password = userinfo.partition(":")
    return match.group(0), user, (password if colon else None), after


def mask_url(url: str) -> str:
    """`url` (or a key=value conninfo) with its password(s) replaced, nothing else."""
    if "://" not in url:
        return mask_text(url)
    parts = split_userinfo(url)
    if parts is not None and parts[2] is not None:
        scheme, user, _, after = parts
        url = f"{scheme}{user}:{MASK}@{after}"
    return mask_text(url)


def mask_text(text: str) -> str:
    """Mask every registered secret, then whatever looks like a password in `text`."""
    text = _mask_known(text)
    if not _ANY_SHAPE.search(text):
        return text
    text = _QUOTED_URL.sub(rf"\g<1>\g<2>{MASK}\g<4>", text)
    text = _URL_IN_TEXT.sub(rf"\g<1>{MASK}\g<3>", text)
    text = _QUERY_PASSWORD.sub(rf"\g<1>{MASK}", text)
    text = _SQL_PASSWORD.sub(rf"\g<1>{MASK}", text)
    return _DSN_PASSWORD.sub(rf"\g<1>{MASK}", text)


def mask_tree(value: Any) -> Any:
    """Mask secrets in a JSON-like structure: values of secret-named keys, and any text."""
    if isinstance(value, dict):
        return {
            key: MASK if looks_secret(str(key)) and item else mask_tree(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_tree(item) for item in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


def mask_file(path: Path) -> None:
    """Rewrite a log in place with its secrets masked (a child wrote it, not our logging)."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return
    masked = mask_text(text)
    if masked != text:
        from poolbench.files import WriteFailed, atomic_file, rewrite_in_place

        try:
            with atomic_file(path, errors="surrogateescape") as out:
                out.write(masked)
        except WriteFailed:  # a full disk: in place, as the masked text mostly is no longer
            rewrite_in_place(
                path, masked.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            )


# --------------------------------------------------------------------------- logging


def install() -> None:
    """Mask every log record poolbench or a library makes, whichever handler prints it."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "poolbench_masking", False):
        return

    def masking_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.msg, record.args = mask_text(record.getMessage()), None
        if record.exc_info and record.exc_info[1] is not None:
            formatted = "".join(traceback.format_exception(*record.exc_info))
            record.exc_text = mask_text(formatted.rstrip("\n"))
        return record

    masking_factory.poolbench_masking = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(masking_factory)
