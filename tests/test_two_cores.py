"""Charts drawn on two cores (poolbench.report.charts.two_cores): every chart drawn once, the
results in order, a failing child's charts drawn by the parent, no child left after Ctrl-C,
and the same PNGs as on one core.

The fork is taken only from a single-threaded process, and a pytest-xdist worker has threads,
so each case runs in a fresh interpreter (the script below), as `poolbench report` does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import pid_alive

SCRIPT = r"""
import json, os, sys, threading, time
from pathlib import Path
from poolbench.report.charts.two_cores import draw_all

out, case = Path(sys.argv[1]), sys.argv[2]
parent = os.getpid()

def task(i):
    def draw():
        if case == "child-fails" and os.getpid() != parent:
            raise RuntimeError("the child's matplotlib broke")
        with (out / f"{i}-{os.getpid()}").open("w"):
            pass
        time.sleep(0.5 if case == "interrupt" else 0.05)
        return i % 3 != 0
    return draw

if case == "threads":
    threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
print(json.dumps({"parent": parent, "results": draw_all([task(i) for i in range(10)])}))
"""


def _run(tmp_path: Path, case: str) -> tuple[dict, list[tuple[int, int]]]:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), case],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    done = [tuple(int(x) for x in p.name.split("-")) for p in tmp_path.iterdir()]
    return json.loads(proc.stdout), sorted(done)


def test_every_chart_is_drawn_once_by_one_of_two_processes_and_results_keep_their_order(
    tmp_path: Path,
) -> None:
    reply, done = _run(tmp_path, "ok")
    assert reply["results"] == [i % 3 != 0 for i in range(10)]
    assert [i for i, _ in done] == list(range(10))  # each once
    pids = {pid for _, pid in done}
    assert len(pids) == 2 and reply["parent"] in pids


def test_the_charts_of_a_failing_child_are_drawn_by_the_parent(tmp_path: Path) -> None:
    reply, done = _run(tmp_path, "child-fails")
    assert reply["results"] == [i % 3 != 0 for i in range(10)]
    assert [i for i, _ in done] == list(range(10))
    assert {pid for _, pid in done} == {reply["parent"]}


def test_with_another_thread_alive_every_chart_is_drawn_here(tmp_path: Path) -> None:
    reply, done = _run(tmp_path, "threads")
    assert reply["results"] == [i % 3 != 0 for i in range(10)]
    assert {pid for _, pid in done} == {reply["parent"]}


@pytest.mark.parametrize("to", ["process group", "parent only"])
def test_ctrl_c_while_charts_are_drawn_leaves_no_child(tmp_path: Path, to: str) -> None:
    """A terminal's Ctrl-C reaches both processes; a SIGINT to the parent alone (a runner
    stopping it) leaves the child to the parent's cleanup, which kills and reaps it."""
    drawn = tmp_path / "drawn"
    drawn.mkdir()
    with (tmp_path / "output").open("w") as output:  # not a pipe: the child would hold it
        proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(drawn), "interrupt"],
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while len({p.name.split("-")[1] for p in drawn.iterdir()}) < 2:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    if to == "process group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, signal.SIGINT)
    proc.wait(timeout=30)
    pids = {int(p.name.split("-")[1]) for p in drawn.iterdir()}
    assert [pid for pid in pids if pid_alive(pid)] == []  # as the parent ends: no child
    assert proc.returncode != 0
    assert len(list(drawn.iterdir())) < 10  # stopped, not finished


@pytest.mark.slow
def test_a_report_on_two_cores_draws_the_pngs_it_draws_on_one(tmp_path: Path) -> None:
    from synthetic import seed_claim_specs, write_run

    runs = [write_run(tmp_path / name, seed_claim_specs(), run_id="r") for name in ("a", "b")]
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "import poolbench.report.charts.two_cores as two\n"
        "from poolbench.report import build_report\n"
        "if sys.argv[2] == 'one':\n"
        "    two._can_fork = lambda count: False\n"
        "build_report(Path(sys.argv[1]))\n"
    )
    for run, cores in zip(runs, ("two", "one"), strict=True):
        subprocess.run([sys.executable, "-c", script, str(run), cores], check=True, timeout=120)
    pngs = {run: {p.name: p.read_bytes() for p in (run / "charts").glob("*.png")} for run in runs}
    assert len(pngs[runs[0]]) >= 4
    assert pngs[runs[0]] == pngs[runs[1]]
