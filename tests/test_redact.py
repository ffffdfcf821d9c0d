"""One masker for every URL and conninfo: hostile passwords never reach a terminal or a file.

The table holds passwords that broke the old masker (unencoded `/`, `#`, `?`, `@`, a space,
`password=` in the query string, key=value conninfo). Each is checked through `mask_url`,
through free text (an error message, a shell-quoted command line, JSON) and, end to end, on
the command line: stderr of a failing `poolbench run`, and no results folder for a bad URL.
A full run with a hostile password is in tests/test_faults_load.py (it greps every file).
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

import pytest
from conftest import poolbench_cli

from poolbench import redact
from poolbench.errors import PoolbenchError
from poolbench.infra.postgres import validate_url
from poolbench.load.locust import start_locust

# (url, password) — the password as a user would type it, and where it hides
HOSTILE = [
    ("postgresql://postgres:Sl/ashPW@127.0.0.1:5432/postgres", "Sl/ashPW"),
    ("postgresql://postgres:Ha#shPW@127.0.0.1:5432/postgres", "Ha#shPW"),
    ("postgresql://postgres:Que?ryPW@127.0.0.1:5432/postgres", "Que?ryPW"),
    ("postgresql://postgres:A@tPW@127.0.0.1:5432/postgres", "A@tPW"),
    ("postgresql://postgres:Spa cePW@127.0.0.1:5432/postgres", "Spa cePW"),
    ("postgresql://postgres:Mi/x#e?d@PW@127.0.0.1:5432/postgres", "Mi/x#e?d@PW"),
    ("postgresql://postgres@127.0.0.1:5432/postgres?password=QueryStrPW", "QueryStrPW"),
    ("postgresql://postgres@127.0.0.1:5432/db?sslmode=disable&password=AmpPW", "AmpPW"),
    ("postgresql+asyncpg://app:Dr%2FiverPW@127.0.0.1/db", "Dr%2FiverPW"),
    ("host=127.0.0.1 user=postgres password='kv PW' dbname=postgres", "kv PW"),
    ("host=127.0.0.1 password=KvPlainPW dbname=postgres", "KvPlainPW"),
    ("postgresql://postgres:BadPortPW@127.0.0.1:port/postgres", "BadPortPW"),
]
IDS = [password for _, password in HOSTILE]


def _leaks(text: str, password: str) -> bool:
    """The password, or any run of 4+ of its characters around a reserved one, shows."""
    pieces = [password, *(p for p in password.replace("%2F", "/").split("/") if len(p) > 3)]
    return any(piece in text for piece in pieces)


@pytest.fixture(autouse=True)
def _no_registered_secrets():
    redact.forget_secrets()
    yield
    redact.forget_secrets()


@pytest.mark.parametrize(("url", "password"), HOSTILE, ids=IDS)
def test_shape_masking_without_registration(url: str, password: str) -> None:
    """Text nobody registered (an app's log, an old run): the shape alone is enough."""
    assert not _leaks(redact.mask_url(url), password)
    for text in (
        f"cannot connect to {url}: refused",
        f"malformed database URL {url!r}: bad port",
        f"poolbench run --database-url {shlex.quote(url)}",
        json.dumps({"database_url": url}),
    ):
        masked = redact.mask_text(text)
        assert not _leaks(masked, password), masked
        assert redact.MASK in masked


@pytest.mark.parametrize(("url", "password"), HOSTILE, ids=IDS)
def test_a_registered_password_is_masked_wherever_it_appears(url: str, password: str) -> None:
    redact.register_url(url)
    for text in (
        f"the server said: password {password} rejected",  # no URL shape at all
        f'libpq: unexpected spaces found in "{password}"',
        f"{url} and again {url}",
    ):
        assert not _leaks(redact.mask_text(text), password)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("ALTER ROLE x PASSWORD 'hunter22'", "ALTER ROLE x PASSWORD ***"),
        ("Password = hunter22 next", "Password = *** next"),
        ("pa\u017f\u017fword=hunter22", "pa\u017f\u017fword=***"),  # ſ folds to s, as in the shapes
        ("REDIS://u:hunter22@cache:6379", "REDIS://u:***@cache:6379"),
        ('INFO: 127.0.0.1:5 - "GET /users/7 HTTP/1.1" 200 OK', None),  # no shape: as it was
    ],
)
def test_the_quick_screen_lets_every_shape_through(text: str, masked: str | None) -> None:
    """A text without "://" or "password" (any case) skips the shape patterns: each shape,
    however cased, still reaches them."""
    assert redact.mask_text(text) == (text if masked is None else masked)


def test_masking_keeps_what_is_not_secret() -> None:
    assert (
        redact.mask_url("postgresql://app:s3cr%40t@127.0.0.1:5432/db")
        == "postgresql://app:***@127.0.0.1:5432/db"
    )
    assert redact.mask_url("postgresql://app@127.0.0.1/db") == "postgresql://app@127.0.0.1/db"
    assert (
        redact.mask_url("postgresql://u@h/db?sslmode=disable&password=x1234&application_name=a")
        == "postgresql://u@h/db?sslmode=disable&password=***&application_name=a"
    )
    assert (
        redact.mask_text("POSTGRES_PASSWORD=hunter22 PORT=5432")
        == "POSTGRES_PASSWORD=*** PORT=5432"
    )


@pytest.mark.parametrize(("url", "password"), HOSTILE, ids=IDS)
def test_validation_errors_never_echo_the_password(url: str, password: str) -> None:
    try:
        validate_url(url)
    except PoolbenchError as exc:
        assert not _leaks(str(exc), password)
        assert "\n" not in str(exc)


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        (
            "postgresql://postgres:Sl/ashPW@127.0.0.1:5432/postgres",
            "unencoded '/'; percent-encode it (%2F)",
        ),
        (
            "postgresql://postgres:A@tPW@127.0.0.1:5432/postgres",
            "unencoded '@'; percent-encode it (%40)",
        ),
        (
            "postgresql://postgres:Spa cePW@127.0.0.1:5432/postgres",
            "unencoded ' '; percent-encode it (%20)",
        ),
    ],
)
def test_unencoded_characters_libpq_would_misread_are_named(url: str, hint: str) -> None:
    with pytest.raises(PoolbenchError) as caught:
        validate_url(url)
    assert str(caught.value) == (
        "malformed database URL 'postgresql://postgres:***@127.0.0.1:5432/postgres': "
        f"the password holds an {hint}"
    )


def test_log_records_are_masked_whichever_logger_prints_them(caplog) -> None:
    redact.install()
    redact.add_secret("Lo g#PW")
    with caplog.at_level(logging.WARNING):
        logging.getLogger("some.library").warning("connect %s failed", "Lo g#PW")
        try:
            raise RuntimeError("postgresql://u:Tr/acePW@h/db")
        except RuntimeError:
            logging.getLogger("x").exception("boom")
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "Lo g#PW" not in text and "Tr/acePW" not in text


# Malformed, unreachable or wrongly typed: each fails before a results folder exists.
CLI_CASES = [
    ("postgresql://postgres:Mi/x#e?d@PW@127.0.0.1:5432/postgres", "Mi/x#e?d@PW"),
    ("postgresql://postgres:Spa cePW@127.0.0.1:5432/postgres", "Spa cePW"),
    ("host=127.0.0.1 user=postgres password='kv PW' dbname=postgres", "kv PW"),
    ("postgresql://postgres:BadPortPW@127.0.0.1:port/postgres", "BadPortPW"),
    ("postgresql://postgres:Unre#ach?PW@127.0.0.1:1/postgres", "Unre#ach?PW"),
    ("postgresql://postgres@127.0.0.1:1/postgres?password=QueryStrPW", "QueryStrPW"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("url", "password"), CLI_CASES, ids=[p for _, p in CLI_CASES])
def test_cli_errors_mask_the_password_and_write_no_results_folder(
    tmp_path: Path, url: str, password: str
) -> None:
    out = tmp_path / "r"
    proc = poolbench_cli("run", "--quick", "--database-url", url, "--out", str(out), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("poolbench run: error: ")
    assert len(proc.stderr.splitlines()) == 1
    assert not _leaks(proc.stderr + proc.stdout, password), proc.stderr
    assert not list(out.glob("*/run.json"))  # a bad URL creates no results folder


def test_locust_log_is_masked_as_it_is_written_and_appended_to(tmp_path: Path) -> None:
    """start_locust writes a child's output through MaskedLog, as the app's: a registered
    secret and a URL's password never reach locust.log (`poolbench ui` had no later pass)."""
    redact.add_secret("s3cret-token-42")
    log = tmp_path / "locust.log"
    for line in ("token s3cret-token-42", "host postgresql://u:hunter22@db/x"):
        process = start_locust([sys.executable, "-c", f"print({line!r})"], log, None)
        process.proc.wait(30)
        process.stop()
    assert log.read_text() == "token ***\nhost postgresql://u:***@db/x\n"
