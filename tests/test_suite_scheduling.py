"""make test's scheduler (tests/conftest.py) reads a test file's text to know whether its
tests share a module fixture: that reading must agree with the fixtures the file defines, or
a shared run would start once per worker (or a file would be held to one worker)."""

from __future__ import annotations

import importlib

from conftest import REPO, shares_a_fixture

SHARED_SCOPES = {"module", "class", "package"}


def _defines_a_shared_fixture(stem: str) -> bool:
    module = importlib.import_module(stem)
    markers = (getattr(v, "_fixture_function_marker", None) for v in vars(module).values())
    return any(m is not None and m.scope in SHARED_SCOPES for m in markers)


def test_the_files_read_as_sharing_a_fixture_are_those_that_define_one() -> None:
    files = sorted((REPO / "tests").glob("test_*.py"))
    defined = {f"tests/{f.name}": _defines_a_shared_fixture(f.stem) for f in files}
    assert defined["tests/test_quick_run.py"] and not defined["tests/test_run.py"]
    assert {path: shares_a_fixture(path) for path in defined} == defined
