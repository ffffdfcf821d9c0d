"""The results reader rejects malformed folders in one line; secrets never reach a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poolbench.errors import PoolbenchError
from poolbench.redact import mask_text, mask_tree, mask_url
from poolbench.results import RunRecord, load_run


def test_mask_url_keeps_everything_but_the_password() -> None:
    assert (
        mask_url("postgresql://app:s3cr%40t@127.0.0.1:5432/db")
        == "postgresql://app:***@127.0.0.1:5432/db"
    )
    assert mask_url("postgresql://app@127.0.0.1/db") == "postgresql://app@127.0.0.1/db"


def test_mask_text_and_tree() -> None:
    line = "connect postgresql+asyncpg://u:hunter2@h/db password=hunter2 ok"
    assert "hunter2" not in mask_text(line)
    tree = mask_tree({"db": {"password": "hunter2", "url": "postgresql://u:hunter2@h/db"}, "n": 3})
    assert "hunter2" not in json.dumps(tree)
    assert tree["n"] == 3


def test_run_record_masks_and_marks_status(tmp_path: Path) -> None:
    record = RunRecord.create(
        tmp_path, "r1", "poolbench run", {"database_url": "postgresql://u:hunter2@h/db"}, {}
    )
    assert json.loads((tmp_path / "r1" / "run.json").read_text())["status"] == "running"
    record.finish("partial", "interrupted")
    text = (tmp_path / "latest" / "run.json").read_text()
    assert "hunter2" not in text
    assert json.loads(text)["status"] == "partial"
    assert load_run(tmp_path / "latest").variants == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "has no run.json"),
        ("{not json", "is not valid JSON"),
        (
            '{"schema": 1, "run_id": "x", "status": "done", "experiments": []}',
            "unknown status 'done'",
        ),
        ('{"schema": 1, "run_id": "x", "status": "complete"}', "lacks the key 'experiments'"),
        ('{"schema": 9, "run_id": "x", "status": "complete", "experiments": []}', "has schema 9"),
        (
            '{"schema": 1, "run_id": "x", "status": "complete", "experiments": [{"name": "e", "variants": [{}]}]}',
            "has no 'dir'",
        ),
    ],
)
def test_malformed_results_folder_is_one_line_error(
    tmp_path: Path, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "run.json").write_text(content)
    with pytest.raises(PoolbenchError, match=message) as error:
        load_run(tmp_path)
    assert "\n" not in str(error.value)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(PoolbenchError, match="is not a results directory"):
        load_run(tmp_path / "absent")
