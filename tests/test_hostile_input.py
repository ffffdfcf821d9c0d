"""Hostile names and numbers from a bench file or the command line: refused in one line,
exit 2, before anything starts (no results folder, no server).

Before: a variant named "../../../../escaped" wrote outside the results folder, "x/y" nested,
"" was accepted, ANSI escapes reached the terminal and folder names; a "/" or 300-character
experiment name, `load_s = nan`, `--soak nan` were tracebacks; `--fail-if garbage` was
refused only after the whole run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, poolbench_cli

from poolbench.config.bench import load_config, select
from poolbench.errors import PoolbenchError
from poolbench.results.record import VariantRecord
from poolbench.results.run_folder import RunRecord

GOOD = f'[variants.after]\napp_dir = "{REPO}/apps_after"\n'


def _refused(tmp_path: Path, bench: str, *extra: str) -> str:
    config = tmp_path / "bench.toml"
    config.write_text(bench)
    out = tmp_path / "r"
    proc = poolbench_cli("run", "--config", str(config), "--out", str(out), *extra, timeout=60)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if not ln.startswith(("usage:", " "))]
    assert len(errors) == 1, proc.stderr  # one line (argparse prints its usage before it)
    assert "\x1b" not in proc.stderr + proc.stdout
    assert not out.exists()
    assert not list(tmp_path.parent.glob("escaped*"))
    return proc.stderr.strip().splitlines()[-1]


def _config_error(tmp_path: Path, bench: str) -> str:
    """The one-line error of load_config (in-process: the command line's path is tested below)."""
    config = tmp_path / "bench.toml"
    config.write_text(bench)
    with pytest.raises(PoolbenchError) as info:
        select(load_config(config))
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
    return str(info.value)


def _toml(name: str) -> str:
    return (
        name.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\x1b", "\\u001b")
        .replace("\t", "\\t")
    )


@pytest.mark.parametrize(
    "name",
    [
        "../../../../escaped",
        "../x",
        "x/y",
        "",
        ".hidden",
        "a..b",
        "a\x1b[31mred",
        "a" * 65,
        "tab\tname",
        "sp ace",
    ],
)
def test_a_hostile_variant_name_is_refused(tmp_path: Path, name: str) -> None:
    bench = (
        f'[variants."{_toml(name)}"]\napp_dir = "{REPO}/apps_after"\n'
        f'[experiments.e]\nvariants = ["{_toml(name)}"]\n'
    )
    error = _config_error(tmp_path, bench)
    assert "variants: bad name" in error and "1 to 64 letters" in error


@pytest.mark.parametrize("name", ["x/y", "a" * 300, "..", "a\x1b[2Jb"])
def test_a_hostile_experiment_name_is_refused(tmp_path: Path, name: str) -> None:
    error = _config_error(tmp_path, GOOD + f'[experiments."{_toml(name)}"]\nvariants = ["after"]\n')
    assert "experiments: bad name" in error
    assert len(error) < 400  # a 300-character name is cut when shown


def test_hostile_names_from_the_command_line_write_nothing(tmp_path: Path) -> None:
    """The real command: one line, exit 2, no results folder, nothing outside it, no escape."""
    bench = (
        f'[variants."../../../../escaped"]\napp_dir = "{REPO}/apps_after"\n'
        f'[experiments."a\\u001b[31mred"]\nvariants = ["../../../../escaped"]\n'
    )
    line = _refused(tmp_path, bench)
    assert "bad name '../../../../escaped'" in line


def test_a_label_with_control_characters_is_refused(tmp_path: Path) -> None:
    bench = GOOD + 'label = "x\\u001b[31my"\n[experiments.e]\nvariants = ["after"]\n'
    assert "variants.after.label must be 1 to 64 printable" in _config_error(tmp_path, bench)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("phases.load_s", "nan"),
        ("phases.idle_s", "inf"),
        ("load.spawn_rate", "-inf"),
        ("phases.warmup_s", "nan"),
        ("app.pool_timeout", "inf"),
    ],
)
def test_every_number_of_the_bench_file_is_finite(tmp_path: Path, key: str, value: str) -> None:
    section, field = key.split(".")
    bench = GOOD + f'[experiments.e]\nvariants = ["after"]\n{section} = {{{field} = {value}}}\n'
    assert f"experiments.e.{key} must be a finite number" in _config_error(tmp_path, bench)


def test_a_number_from_the_bench_file_reaches_the_command_line_as_one_line(tmp_path: Path) -> None:
    """Before: load_s = nan was a 34-line traceback (cannot convert float NaN to integer)."""
    bench = GOOD + '[experiments.e]\nvariants = ["after"]\nphases = {load_s = nan}\n'
    assert "experiments.e.phases.load_s must be a finite number" in _refused(tmp_path, bench)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--soak", "nan"], "argument --soak: a positive duration"),
        (["--soak", "inf"], "argument --soak: a positive duration"),
        (
            ["--locust-workers", "1", "--locust-workers-timeout", "nan"],
            "--locust-workers-timeout must be a finite number",
        ),
        (["--fail-if", "garbage"], "--fail-if: threshold 'garbage'"),
        (["--fail-if", "after.nosuch > 1"], "unknown metric 'nosuch'"),
        (["--fail-if", "before.p95_ms > 1"], "no experiment has the variant(s) before"),
    ],
)
def test_command_line_numbers_and_thresholds_are_checked_first(
    tmp_path: Path, args: list[str], said: str
) -> None:
    bench = GOOD + '[experiments.e]\nvariants = ["after"]\n'
    assert said in _refused(tmp_path, bench, *args)


def _entry(dir: str) -> VariantRecord:
    return VariantRecord(
        experiment="e",
        variant="v",
        repeat=1,
        dir=dir,
        label="v",
        app_dir=None,
        command=None,
        app={},
        load={},
        postgres_settings={},
        workers=1,
        workers_source="experiment",
        engines=[],
    )


def test_a_variant_folder_outside_the_run_is_refused(tmp_path: Path) -> None:
    """The last guard: a `dir` that leads out of the run folder is never created."""
    record = RunRecord(tmp_path / "run")
    (tmp_path / "run").mkdir()
    with pytest.raises(PoolbenchError, match="outside"):
        record.variant_dir(_entry(dir="../../escaped"))
    assert not (tmp_path / "escaped").exists()
