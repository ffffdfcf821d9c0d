"""What the end-to-end fault tests share (tests/test_faults*.py): a one-experiment bench
file of the after app, `poolbench run` started in the background, and waits on its folder.

The fault tests are spread over several files so that `make test` (pytest-xdist, a file per
worker at a time) runs them side by side; their helpers live here, in no test file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, pid_alive

SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH = """
[variants.after]
app_dir = "{repo}/apps_after"
[experiments.e]
variants = ["after"]
repeats = {repeats}
app = {{workers = {workers}, pool_size = {pool_size}, max_overflow = {max_overflow}}}
load = {{users = {users}, spawn_rate = {users}, shape = "steady", \
locust_args = ["--hold-ms", "{hold_ms}"]}}
phases = {{warmup_s = 0, load_s = {load_s}, idle_s = 0}}
"""


def bench_file(tmp_path: Path, **settings) -> Path:
    values = {
        "repeats": 1,
        "workers": 1,
        "pool_size": 2,
        "max_overflow": 0,
        "users": 8,
        "hold_ms": 5,
        "load_s": 5,
        **settings,
    }
    path = tmp_path / "bench.toml"
    path.write_text(BENCH.format(repo=REPO, **values))
    return path


def start_run(config: Path, out: Path, *extra: str, report: bool = False) -> subprocess.Popen:
    args = ["run", "--config", str(config), "--out", str(out), *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "poolbench", *args, *([] if report else ["--no-report"])],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def in_load(out: Path, proc: subprocess.Popen, variant_dir: str, timeout: float = 120) -> dict:
    """variant.json of `variant_dir` once its load phase (Locust's test) has run 1.5 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        for path in out.glob(f"*/{variant_dir}/variant.json"):
            entry = json.loads(path.read_text())
            if any(p["name"] == "load" for p in entry.get("phases", [])):
                time.sleep(1.5)
                return entry
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"{variant_dir} never reached its load phase")


def gone(pids, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if pid_alive(p)]


def events_of(run_dir: Path, variant_dir: str, kind: str) -> list[dict]:
    lines = (run_dir / variant_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]
