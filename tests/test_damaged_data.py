"""Damaged data, one rule: a samples or requests file that is missing, empty or cut makes
`poolbench report` exit 4 with a warning naming the variant, whatever the damage.

One real run (an A/A pair of the consolidated app: embedded PostgreSQL, uvicorn, Locust),
copied and damaged once per case. Before, a deleted samples.csv exited 0 and the variant
silently dropped out of the comparison; a 0-byte one exited 2; a cut requests.bin exited 2.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REPO, poolbench_cli

from poolbench.cli import main

pytestmark = pytest.mark.e2e

BENCH = """
[variants.after]
app_dir = "{repo}/apps_after"
[experiments.e]
variants = ["after"]
app = {{workers = 1, pool_size = 2, max_overflow = 0}}
load = {{users = 6, spawn_rate = 6, shape = "steady", locust_args = ["--hold-ms", "5"]}}
phases = {{warmup_s = 0, load_s = 3, idle_s = 1}}
"""


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("damaged")
    (tmp / "bench.toml").write_text(BENCH.format(repo=REPO))
    proc = poolbench_cli(
        "run",
        "--config",
        str(tmp / "bench.toml"),
        "--out",
        str(tmp / "r"),
        "--variants",
        "after,after",
        "--no-report",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = (tmp / "r").glob("2*")
    assert (run_dir / "e/after_2-1/samples.csv").stat().st_size > 0
    assert (run_dir / "e/after_2-1/requests.bin").stat().st_size > 32
    return run_dir


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])


DAMAGES = {
    "samples deleted": ("samples.csv", Path.unlink, "samples.csv is missing"),
    "samples empty": ("samples.csv", lambda p: p.write_bytes(b""), "samples.csv is empty"),
    "samples cut": ("samples.csv", _cut, "its last line is cut"),
    "requests deleted": ("requests.bin", Path.unlink, "requests.bin is missing"),
    "requests empty": ("requests.bin", lambda p: p.write_bytes(b""), "requests.bin is empty"),
    "requests cut": ("requests.bin", _cut, "its last record is cut"),
}


def _report(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`poolbench report RUN --no-charts` in this process (the command's own entry point;
    the analysis imports are paid once, not per case): its exit code and stderr."""
    code = main(["report", str(run_dir), "--no-charts"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", list(DAMAGES))
def test_every_damage_exits_4_naming_the_variant(
    real_run: Path, tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name, damage, said = DAMAGES[case]
    run_dir = tmp_path / real_run.name
    shutil.copytree(real_run, run_dir, symlinks=True)
    damage(run_dir / "e/after_2-1" / name)
    code, stderr = _report(run_dir, capsys)
    assert code == 4, stderr[-2000:]
    assert "Traceback" not in stderr
    warnings = [line for line in stderr.splitlines() if "damaged data" in line]
    assert warnings and all("e/after_2-1" in line for line in warnings), stderr
    assert any(said in line for line in warnings), stderr


def test_an_undamaged_run_reports_with_exit_0(
    real_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / real_run.name
    shutil.copytree(real_run, run_dir, symlinks=True)
    code, stderr = _report(run_dir, capsys)
    assert code == 0, stderr[-2000:]
    assert "damaged" not in stderr
