"""`poolbench lint`: the engine census on small fixture packages and on the two real apps.

Fixtures under tests/fixtures/lint/forms state what they expect in comment lines of the form
`# expect: <kind> <scope> <function> <disposed|open>` placed right above the line of the
engine-creating call (several, `;`-separated and in column order, for one line). Comments are
invisible to the census, so a file without such lines must yield no site at all.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from poolbench.cli import main as poolbench_main
from poolbench.lint.census import Census, add_arguments, census, format_json, format_text, run

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "lint"
FORMS = FIXTURES / "forms"
FORM_FILES = sorted(path.relative_to(FORMS).as_posix() for path in FORMS.rglob("*.py"))
APPS_BEFORE = ROOT / "apps_before"
APPS_AFTER = ROOT / "apps_after"

Expected = tuple[int, str, str, str, bool]


def _expected(path: Path) -> list[Expected]:
    """(line, kind, scope, function, disposed) of every `# expect:` comment in a fixture."""
    expected = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text.startswith("# expect:"):
            continue
        for spec in text.removeprefix("# expect:").split(";"):
            kind, scope, function, disposed = spec.split()
            expected.append((number + 1, kind, scope, function, disposed == "disposed"))
    return expected


def _found(result: Census, relative: str) -> list[Expected]:
    return [
        (site.line, site.kind, site.scope, site.function, site.disposed)
        for site in result.sites
        if site.path == relative
    ]


def _write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture(scope="module")
def forms() -> Census:
    return census(FORMS)


# --- what counts as an engine, and in which scope ------------------------------------------


def test_fixtures_carry_expectations() -> None:
    # Guards the table-driven test below against a marker format that silently matches nothing.
    total = sum(len(_expected(FORMS / relative)) for relative in FORM_FILES)
    assert len(FORM_FILES) >= 20
    assert total >= 40


@pytest.mark.parametrize("relative", FORM_FILES)
def test_sites_match_expectations(forms: Census, relative: str) -> None:
    assert _found(forms, relative) == _expected(FORMS / relative)


@pytest.mark.parametrize(
    ("module", "calls"),
    [
        ("from_alias", ["create_engine"]),
        ("from_asyncio", ["create_async_engine"]),
        ("module_alias", ["create_engine"]),
        ("dotted_alias", ["create_async_engine"]),
        ("from_ext_asyncio", ["create_async_engine"]),
        ("plain_import", ["create_engine"]),
        ("dotted_import", ["create_async_engine"]),
        ("engine_submodule", ["create_engine"]),
        ("from_config", ["engine_from_config", "async_engine_from_config"]),
        ("star_import", ["create_engine", "create_async_engine"]),
        ("assigned_alias", ["create_engine"]),
        ("function_import", ["create_async_engine"]),
    ],
)
def test_every_import_form(forms: Census, module: str, calls: list[str]) -> None:
    sites = [site for site in forms.sites if site.module == f"import_forms.{module}"]
    assert [site.call for site in sites] == calls
    kinds = ["async" if "async" in call else "sync" for call in calls]
    assert [site.kind for site in sites] == kinds


@pytest.mark.parametrize(
    "relative", [name for name in FORM_FILES if name.startswith("not_engines/")]
)
def test_lookalikes_are_not_engines(forms: Census, relative: str) -> None:
    text = (FORMS / relative).read_text()
    assert "create_engine" in text or "create_async_engine" in text  # the bait is there
    assert _found(forms, relative) == []


def test_later_redefinition_hides_the_import_from_functions(forms: Census) -> None:
    sites = [site for site in forms.sites if site.module == "scoping.redefined_later"]
    assert [(site.scope, site.function) for site in sites] == [("import", "<module>")]


def test_nested_functions_get_qualified_names(forms: Census) -> None:
    functions = {site.function for site in forms.sites if site.module == "scoping.nested"}
    assert functions == {
        "outer.<locals>.inner",
        "make_handler.<locals>.<lambda>",
        "Settings",
        "Repository.__init__",
        "Repository.Probe.run",
    }


def test_lazy_engines_on_function_attribute_and_global(forms: Census) -> None:
    lazy = {(s.module, s.function) for s in forms.sites if s.scope == "lazy"}
    assert ("scoping.lazy_function_attribute", "get_session") in lazy
    assert ("scoping.lazy_function_attribute", "get_engine") in lazy
    assert ("scoping.lazy_global", "get_engine") in lazy
    assert ("scoping.lazy_global", "get_factory") in lazy


def test_disposed_in_finally_and_awaited(forms: Census) -> None:
    by_function = {s.function: s for s in forms.sites if s.module == "scoping.disposed"}
    for function in ("check_sync", "check_async"):
        assert by_function[function].scope == "call"
        assert by_function[function].disposed
        assert by_function[function].status == "temporary"


def test_per_call_engine_without_dispose_is_a_leak(forms: Census) -> None:
    leaks = {(s.module, s.function) for s in forms.leaks}
    assert ("scoping.leaks", "get_session") in leaks
    assert ("scoping.leaks", "list_items") in leaks
    assert ("scoping.disposed", "check_async") not in leaks


# --- files, module names, warnings ---------------------------------------------------------


def test_module_names_are_relative_to_the_path() -> None:
    assert {s.module for s in census(FIXTURES / "two_owners").sites} == {"app.db", "app.cache"}
    one_owner = census(FIXTURES / "one_owner")
    assert {s.path for s in one_owner.sites} == {"app/db/session.py", "app/api/health.py"}
    assert {s.module for s in one_owner.sites} == {"app.db.session", "app.api.health"}


def test_a_package_path_keeps_its_package_name() -> None:
    sites = census(FIXTURES / "one_owner" / "app").sites
    assert {s.module for s in sites} == {"app.db.session", "app.api.health"}
    single = census(FIXTURES / "one_owner" / "app" / "db" / "session.py")
    assert {s.module for s in single.sites} == {"app.db.session"}
    assert single.files_scanned == 1


def test_syntax_error_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "app/broken.py": "def f(:\n    pass\n",
            "app/db.py": "import sqlalchemy as sa\nengine = sa.create_engine('sqlite://')\n",
        },
    )
    result = census(tmp_path)
    assert result.files_scanned == 2
    assert [s.module for s in result.sites] == ["app.db"]
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("app/broken.py:1: syntax error")
    assert "Warnings:\n  app/broken.py:1: syntax error" in format_text(result)
    # a census that skipped a file never says OK, and fails the command
    assert result.exit_code == 1
    assert result.verdict == (
        "FAIL: 1 module creates long-lived engines: app.db, "
        "but 1 file could not be analysed: app/broken.py"
    )
    assert "OK" not in format_text(result)


def test_lint_command_exits_non_zero_when_a_file_cannot_be_parsed(tmp_path: Path) -> None:
    from conftest import poolbench_cli

    _write(tmp_path, {"app/broken.py": "def f(:\n", "app/ok.py": "x = 1\n"})
    proc = poolbench_cli("lint", str(tmp_path))
    assert proc.returncode == 1
    assert "OK" not in proc.stdout
    assert proc.stdout.rstrip().endswith(
        "FAIL: no module creates long-lived engines, but 1 file could not be analysed: "
        "app/broken.py"
    )


def test_hidden_dirs_caches_and_virtualenvs_are_skipped(tmp_path: Path) -> None:
    engine = "from sqlalchemy import create_engine\nengine = create_engine('sqlite://')\n"
    _write(
        tmp_path,
        {
            "app/db.py": engine,
            ".venv/lib/site.py": engine,
            ".git/hooks/hook.py": engine,
            "app/__pycache__/db.py": engine,
            "env/pyvenv.cfg": "home = /usr/bin\n",
            "env/lib/site.py": engine,
        },
    )
    result = census(tmp_path)
    assert result.files_scanned == 1
    assert [s.path for s in result.sites] == ["app/db.py"]


def test_missing_path_is_a_poolbench_error(tmp_path: Path) -> None:
    from poolbench.errors import PoolbenchError

    with pytest.raises(PoolbenchError, match="no such file or directory"):
        census(tmp_path / "missing")


# --- verdict and allowlist -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "allow", "long_lived", "leaks", "exit_code"),
    [
        ("one_owner", [], ["app.db.session"], 0, 0),
        ("two_owners", [], ["app.cache", "app.db"], 0, 1),
        ("two_owners", ["app.cache"], ["app.db"], 0, 0),
        ("two_owners", ["app.c*"], ["app.db"], 0, 0),
        ("two_owners", ["app.ca"], ["app.cache", "app.db"], 0, 1),
        ("two_owners", ["app.*"], [], 0, 0),
        ("leaky", [], ["app.reports"], 1, 1),
        ("leaky", ["app.reports"], [], 0, 0),
    ],
)
def test_verdict(
    fixture: str, allow: list[str], long_lived: list[str], leaks: int, exit_code: int
) -> None:
    result = census(FIXTURES / fixture, allow)
    assert result.long_lived_modules == long_lived
    assert len(result.leaks) == leaks
    assert result.exit_code == exit_code


def test_temporary_engines_do_not_count_as_long_lived() -> None:
    result = census(FIXTURES / "one_owner")
    health = [s for s in result.sites if s.module == "app.api.health"]
    assert [(s.kind, s.scope, s.disposed, s.status) for s in health] == [
        ("async", "call", True, "temporary"),
        ("sync", "call", True, "temporary"),
    ]
    assert result.verdict == "OK: 1 module creates long-lived engines: app.db.session"


def test_text_output_table_and_verdict() -> None:
    text = format_text(census(FIXTURES / "two_owners"))
    lines = text.splitlines()
    assert lines[2].split() == ["MODULE", "LINE", "KIND", "SCOPE", "FUNCTION", "DISPOSED", "STATUS"]
    assert lines[3].split() == ["app.cache", "11", "sync", "lazy", "get_engine", "no", "long-lived"]
    assert lines[4].split() == ["app.db", "5", "async", "import", "<module>", "no", "long-lived"]
    assert lines[-1] == (
        "FAIL: 2 modules create long-lived engines: app.cache, app.db (expected at most 1)"
    )


def test_text_output_names_the_leak() -> None:
    text = format_text(census(FIXTURES / "leaky"))
    assert "Connection leaks" in text
    assert "  app/reports.py:7 in report (app.reports)" in text
    assert text.splitlines()[-1].startswith("FAIL: 1 connection leak")
    assert "app/reports.py:7 (report)" in text.splitlines()[-1]


def test_json_output_parses_with_stable_keys() -> None:
    data = json.loads(format_json(census(FIXTURES / "two_owners", ["app.cache"])))
    assert set(data) == {
        "root",
        "files_scanned",
        "sites",
        "long_lived_modules",
        "allowed_modules",
        "leaks",
        "warnings",
        "verdict",
        "exit_code",
    }
    assert data["long_lived_modules"] == ["app.db"]
    assert data["allowed_modules"] == ["app.cache"]
    assert data["exit_code"] == 0
    assert data["files_scanned"] == 3
    assert data["sites"][0] == {
        "path": "app/cache.py",
        "module": "app.cache",
        "line": 11,
        "column": 18,
        "call": "create_engine",
        "kind": "sync",
        "scope": "lazy",
        "function": "get_engine",
        "disposed": False,
        "status": "long-lived",
    }


# --- command line ----------------------------------------------------------------------------


def test_main_exit_codes_and_formats(capsys: pytest.CaptureFixture[str]) -> None:
    assert poolbench_main(["lint", str(FIXTURES / "two_owners")]) == 1
    assert "FAIL: 2 modules" in capsys.readouterr().out
    assert (
        poolbench_main(
            ["lint", str(FIXTURES / "two_owners"), "--allow", "app.cache", "--format", "json"]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["exit_code"] == 0
    assert (
        poolbench_main(["lint", str(FIXTURES / "two_owners"), "--allow", "app.cache", "app.db"])
        == 0
    )
    assert poolbench_main(["lint", str(FIXTURES / "one_owner"), "--format", "text"]) == 0


def test_main_missing_path_is_one_line_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert poolbench_main(["lint", str(tmp_path / "missing")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"poolbench lint: error: no such file or directory: {tmp_path}/missing\n"


def test_module_entry_point_missing_path_has_no_traceback(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "poolbench", "lint", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert len(completed.stderr.splitlines()) == 1
    assert "Traceback" not in completed.stderr


def test_plugs_into_a_parent_parser(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="poolbench")
    subcommands = parser.add_subparsers(dest="command", required=True)
    lint = subcommands.add_parser("lint")
    add_arguments(lint)
    lint.set_defaults(handler=run)
    args = parser.parse_args(["lint", str(FIXTURES / "leaky"), "--format", "json"])
    assert args.handler(args) == 1
    assert json.loads(capsys.readouterr().out)["leaks"][0]["function"] == "report"


# --- the real apps -------------------------------------------------------------------------

SEED_MODULES = [
    "app.api.dependencies",
    "app.core.database",
    "app.core.db",
    "app.db",
    "app.db.session",
]


@pytest.mark.skipif(
    not (APPS_BEFORE / "app").is_dir() or not (APPS_AFTER / "app").is_dir(),
    reason="apps_before/app or apps_after/app is missing: the real apps are not in this tree",
)
def test_real_apps() -> None:
    before = census(APPS_BEFORE)
    assert not before.warnings
    assert before.long_lived_modules == SEED_MODULES
    assert before.leaks == []
    assert before.exit_code == 1
    lazy = [s for s in before.sites if s.module == "app.api.dependencies"]
    assert lazy and all(s.scope == "lazy" and s.kind == "async" for s in lazy)
    for module in ("app.db.session", "app.core.db", "app.db"):
        kinds = {s.kind for s in before.sites if s.module == module}
        assert kinds == {"async", "sync"}, module
    health = [s for s in before.sites if s.module == "app.api.health"]
    assert len(health) == 2
    assert all(s.status == "temporary" for s in health)

    after = census(APPS_AFTER)
    assert not after.warnings
    assert after.long_lived_modules == ["app.db.session"]
    assert {s.module for s in after.sites} <= {"app.db.session", "app.api.health"}
    assert all(s.status == "temporary" for s in after.sites if s.module == "app.api.health")
    assert after.exit_code == 0
