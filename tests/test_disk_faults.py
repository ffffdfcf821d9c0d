"""A full disk, a results folder that stops taking files, a bad --out or --config.

Each case is a real `poolbench run` (or `clean`) on a real filesystem: a small tmpfs mounted
for the test, filled mid-run, or a folder made immutable (`chattr +i`: the tests run as root,
for whom a mode of 0o555 changes nothing, and a tmpfs with files open for writing cannot be
remounted read-only). What must hold: a one-line error naming the path, run.json `failed`
(or `abandoned`) wherever it can still be written, no temporary file left, no process left.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, pid_alive, poolbench_cli

from poolbench.infra import ledger

BENCH = """
[variants.after]
app_dir = "{repo}/apps_after"
[experiments.e]
variants = ["after"]
app = {{workers = 1, pool_size = 2, max_overflow = 0}}
load = {{users = 8, spawn_rate = 8, shape = "steady", locust_args = ["--hold-ms", "5"]}}
phases = {{warmup_s = 0, load_s = 6, idle_s = 1}}
"""


def _bench(tmp_path: Path) -> Path:
    path = tmp_path / "bench.toml"
    path.write_text(BENCH.format(repo=REPO))
    return path


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def _immutable(*paths: Path) -> Iterator[None]:
    """Folders in which nothing can be created, renamed or removed, even by root."""
    done = subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=False)


def _start(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "poolbench",
            "run",
            "--config",
            str(config),
            "--out",
            str(out),
            "--no-report",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _in_load(out: Path, proc: subprocess.Popen, timeout: float = 120) -> Path:
    """The variant's folder once its load phase has begun."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        for path in out.glob("2*/e/after-1/variant.json"):  # not by results/latest
            with contextlib.suppress(ValueError, OSError):
                if any(p["name"] == "load" for p in json.loads(path.read_text())["phases"]):
                    time.sleep(1.0)
                    return path.parent
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the variant never reached its load phase")


def _fill(folder: Path) -> None:
    """Write zeros into folder/filler until the disk is full."""
    with contextlib.suppress(OSError), open(folder / "filler", "wb") as handle:
        while True:
            handle.write(b"\0" * 65536)


def _assert_failed_cleanly(proc: subprocess.Popen, run_dir: Path, stderr: str) -> None:
    assert proc.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("poolbench run: error: cannot write ") and str(run_dir) in last, last
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "failed" and meta["error"].startswith("cannot write ")
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]
    left = ledger.leftovers(run_dir / ledger.LEDGER_FILE)
    assert not [i for i in left if i["kind"] == "process" and pid_alive(int(i["pid"]))]
    assert not [i for i in left if i["kind"] == "data_dir" and Path(i["path"]).exists()]


@pytest.mark.e2e
def test_a_disk_filled_mid_run_fails_the_run_in_one_line(tmp_path: Path) -> None:
    """Before: a 108-line traceback, exit 1, run.json stuck at `running`, .tmp files left."""
    with _tmpfs(tmp_path / "disk", "16m") as disk:
        proc = _start(_bench(tmp_path), disk)
        variant = _in_load(disk, proc)
        _fill(disk)
        _, stderr = proc.communicate(timeout=180)
        _assert_failed_cleanly(proc, variant.parents[1], stderr)


@pytest.mark.e2e
def test_a_results_folder_made_read_only_mid_run_fails_the_run_in_one_line(
    tmp_path: Path,
) -> None:
    """Before: a 77-line traceback, run.json stuck at `running`."""
    out = tmp_path / "r"
    proc = _start(_bench(tmp_path), out)
    variant = _in_load(out, proc)
    run_dir = variant.parents[1]
    with _immutable(run_dir, variant.parent, variant):
        _, stderr = proc.communicate(timeout=180)
        _assert_failed_cleanly(proc, run_dir, stderr)


def test_a_disk_too_small_for_the_run_is_refused_before_it_starts(tmp_path: Path) -> None:
    """Before: the run started, then a traceback when the disk filled."""
    with _tmpfs(tmp_path / "disk", "300k") as disk:
        proc = poolbench_cli("run", "--config", str(_bench(tmp_path)), "--out", str(disk))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert "MiB free, this run needs about" in proc.stderr
        assert list(disk.iterdir()) == []


def test_clean_on_a_full_disk_marks_the_run_and_does_not_crash(tmp_path: Path) -> None:
    """Before: a traceback (OSError: No space left on device) from `poolbench clean`."""
    from test_clean import _abandoned_run, _dead_owner

    with _tmpfs(tmp_path / "disk", "1m") as disk:
        data_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"poolbench-pg-full-{os.getpid()}"
        (data_dir / "data").mkdir(parents=True, exist_ok=True)
        item = {"kind": "data_dir", "id": f"data_dir/{data_dir}", "path": str(data_dir)}
        run_dir = _abandoned_run(disk, _dead_owner(), [item])
        (run_dir / ".run.json.tmp").write_text("{")  # what the old code's crash left
        _fill(disk)
        proc = poolbench_cli("clean", str(disk), timeout=60)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert f"removed {data_dir}" in proc.stdout and not data_dir.exists()
        assert json.loads((run_dir / "run.json").read_text())["status"] == "abandoned"
        assert not [p for p in disk.rglob("*") if ".tmp" in p.name]


@pytest.mark.parametrize(
    ("out", "config", "expected"),
    [
        ("FILE", None, "is not a folder (it is a file)"),
        ("/dev/null", None, "--out /dev/null is not a folder"),
        ("FILE/sub", None, "is not a folder"),
        ("LOCKED/results", None, "cannot write in"),
        ("", None, "--out: must name a folder"),
        (None, "DIR", "is a directory, not a bench file"),
    ],
)
def test_out_and_config_are_checked_before_anything_starts(
    tmp_path: Path, out: str | None, config: str | None, expected: str
) -> None:
    """Before: 21-line tracebacks; `--out ""` wrote the run into the current directory."""
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "LOCKED").mkdir()
    (tmp_path / "DIR").mkdir()
    args = ["run", "--config", str(tmp_path / config) if config else str(_bench(tmp_path))]
    if out is not None:
        args += [
            "--out",
            out.replace("FILE", str(tmp_path / "FILE")).replace("LOCKED", str(tmp_path / "LOCKED")),
        ]
    else:
        args += ["--out", str(tmp_path / "r")]
    with _immutable(tmp_path / "LOCKED"):
        proc = poolbench_cli(*args, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert expected in proc.stderr.strip().splitlines()[-1], proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["ui", "size"])
def test_ui_and_size_check_out_before_anything_starts(tmp_path: Path, command: str) -> None:
    """Before: a traceback once the session or sweep tried to write its results folder."""
    (tmp_path / "FILE").write_text("x")
    proc = poolbench_cli(command, "--out", str(tmp_path / "FILE"), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        f"poolbench {command}: error: --out {tmp_path / 'FILE'} is not a folder (it is a file)"
    )
