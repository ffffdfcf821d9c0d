"""Bench configuration: the shipped file is valid, and bad input gets a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolbench.config.bench import load_config, select
from poolbench.errors import PoolbenchError
from poolbench.options import Overrides

BENCH = Path(__file__).parents[1] / "scenarios" / "bench.toml"


def test_shipped_bench_file_has_the_two_default_experiments() -> None:
    config = load_config(BENCH)
    assert config.default_experiments == ("seed-claim", "stock-postgres")
    seed = config.experiments["seed-claim"]
    assert (seed.app.pool_size, seed.app.max_overflow, seed.app.workers) == (20, 0, 1)
    assert seed.postgres.max_connections == 200
    assert seed.load.shape == "ramp" and seed.load.users == 150
    stock = config.experiments["stock-postgres"]
    assert (stock.app.pool_size, stock.app.max_overflow) == (20, 10)
    assert stock.postgres.max_connections == 100


def test_quick_runs_the_first_experiment_with_small_pools() -> None:
    [quick] = select(load_config(BENCH), Overrides(quick=True))
    assert quick.name == "seed-claim"
    assert (quick.app.pool_size, quick.app.max_overflow) == (4, 0)
    assert quick.phases.warmup_s + quick.phases.load_s + quick.phases.idle_s <= 30


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bench.toml"
    path.write_text(text)
    return path


MINIMAL = """
[variants.a]
app_dir = "apps_before"
[experiments.e]
variants = ["a"]
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            MINIMAL + "[experiments.e.app]\npool_sise = 3\n",
            "unknown key experiments.e.app.pool_sise: valid keys are max_overflow, pool_size",
        ),
        (
            MINIMAL + "[experiments.e.app]\npool_size = 'big'\n",
            "experiments.e.app.pool_size must be int",
        ),
        (MINIMAL + "[experiments.e.load]\nshape = 'wave'\n", "is not one of steady, ramp, spike"),
        (
            MINIMAL + "[experiments.e.postgres]\nprovider = 'cloud'\n",
            "is not one of embedded, url, compose",
        ),
        (MINIMAL.replace('["a"]', '["a", "zz"]'), "unknown variant 'zz': valid variants are a"),
        (MINIMAL + "[experiments.e.app]\npool_size = 0\n", "pool_size must be at least 1"),
        ("[variants.a]\n", "needs exactly one of app_dir or command"),
        ("not = [toml", "is not valid TOML"),
    ],
)
def test_bad_configuration_is_one_line_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(PoolbenchError) as error:
        load_config(_write(tmp_path, text))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_experiment_and_variant_list_the_valid_names() -> None:
    config = load_config(BENCH)
    with pytest.raises(
        PoolbenchError,
        match="valid experiments are observer-effect, pgbouncer, seed-claim, soak, stock-postgres",
    ):
        select(config, Overrides(experiments=("nope",)))
    with pytest.raises(
        PoolbenchError,
        match=r"valid variants are after, after-minimal, after-pgbouncer, "
        r"after-pgbouncer-nullpool, "
        r"before, before-pgbouncer, before-pgbouncer-misconfigured$",
    ):
        select(config, Overrides(variants=("before", "middle")))


def test_a_variant_can_run_under_the_minimal_collector() -> None:
    config = load_config(BENCH)
    assert config.variants["after"].collector == "default"
    minimal = config.variants["after-minimal"]
    assert (minimal.collector, minimal.app_dir, minimal.label) == ("minimal", "apps_after", "after")
    observer = config.experiments["observer-effect"]
    assert observer.variants == ("after", "after-minimal") and observer.repeats >= 3
    assert "observer-effect" not in config.default_experiments


def test_an_unknown_collector_profile_is_one_line_naming_the_choices(tmp_path: Path) -> None:
    text = MINIMAL.replace('app_dir = "apps_before"', 'app_dir = "apps_before"\ncollector = "x"')
    with pytest.raises(PoolbenchError) as error:
        load_config(_write(tmp_path, text))
    assert str(error.value) == "variants.a.collector 'x' is not one of default, minimal"


def test_a_collector_profile_that_is_not_a_word_is_one_line_too(tmp_path: Path) -> None:
    """Before: collector = ["minimal"] was a traceback (unhashable type: 'list')."""
    text = MINIMAL.replace('app_dir = "apps_before"', 'app_dir = "apps_before"\ncollector = ["x"]')
    with pytest.raises(PoolbenchError) as error:
        load_config(_write(tmp_path, text))
    assert str(error.value) == "variants.a.collector ['x'] is not one of default, minimal"
    minimal = MINIMAL.replace(
        'app_dir = "apps_before"', 'app_dir = "apps_before"\ncollector = "minimal"'
    )
    from poolbench.config.variants import CollectorProfile

    assert (
        load_config(_write(tmp_path, minimal)).variants["a"].collector is CollectorProfile.MINIMAL
    )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PoolbenchError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_repeats_alternate_the_variant_order() -> None:
    from poolbench.run.runner import variant_order

    assert variant_order(("before", "after"), 1) == ["before", "after"]
    assert variant_order(("before", "after"), 2) == ["after", "before"]
    assert variant_order(("before", "after"), 3) == ["before", "after"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL + "repeats = 'abc'\n", "experiments.e.repeats must be int, got str 'abc'"),
        ("[defaults]\nrepeats = 'abc'\n" + MINIMAL, "defaults.repeats must be int, got str 'abc'"),
        (
            "[defaults]\nexperiments = 'e'\n" + MINIMAL,
            "defaults.experiments must be a list of names, e.g. ['e'], not a string",
        ),
        (
            "[defaults]\nvariants = 'a'\n" + MINIMAL,
            "defaults.variants must be a list of names, e.g. ['a'], not a string",
        ),
        (
            MINIMAL.replace('["a"]', '"a"'),
            "experiments.e.variants must be a list of names, e.g. ['a'], not a string",
        ),
        (MINIMAL + "app = 3\n", "experiments.e.app must be a table, got int 3"),
    ],
)
def test_wrong_types_are_one_line_errors_not_tracebacks(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(PoolbenchError) as error:
        load_config(_write(tmp_path, text))
    assert str(error.value) == message


def test_quick_override_is_blamed_where_it_was_set(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, MINIMAL + "[quick.app]\npool_size = 0\n"))
    with pytest.raises(PoolbenchError) as error:
        select(config, Overrides(quick=True))
    assert str(error.value) == "quick.app.pool_size must be at least 1, got 0"
    with pytest.raises(PoolbenchError, match=r"^quick\.repeats must be int"):
        select(
            load_config(_write(tmp_path, MINIMAL + "[quick]\nrepeats = 'abc'\n")),
            Overrides(quick=True),
        )
    with pytest.raises(PoolbenchError, match=r"^--repeats must be at least 1, got 0$"):
        select(load_config(_write(tmp_path, MINIMAL)), Overrides(repeats=0))


@pytest.mark.slow
def test_cli_reports_a_string_repeats_in_one_line(tmp_path: Path) -> None:
    from conftest import poolbench_cli

    proc = poolbench_cli("run", "--config", str(_write(tmp_path, MINIMAL + "repeats = 'abc'\n")))
    assert proc.returncode == 2
    assert proc.stderr == "poolbench run: error: experiments.e.repeats must be int, got str 'abc'\n"


@pytest.mark.slow
def test_a_claim_naming_an_unknown_metric_stops_the_run_before_it_starts(tmp_path: Path) -> None:
    """The bench file reads without the analysis; `poolbench run` checks claims' metrics."""
    from conftest import poolbench_cli

    claim = (
        '[experiments.e.claims.c]\ntext = "fewer"\nmetric = "peak_conections"\n'
        'direction = "lower"\n'
    )
    out = tmp_path / "results"
    proc = poolbench_cli(
        "run", "--config", str(_write(tmp_path, MINIMAL + claim)), "--out", str(out)
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(
        "poolbench run: error: experiments.e.claims.c names unknown metric 'peak_conections': "
        "valid metrics are peak_connections, "
    )
    assert proc.stderr.count("\n") == 1 and not out.exists()


def test_overrides_come_from_any_commands_options(tmp_path: Path) -> None:
    """One record from `run`'s options and from `size`'s (singular --experiment/--variant)."""
    import argparse

    from poolbench.run import command, size_sweep

    run_parser, size_parser = argparse.ArgumentParser(), argparse.ArgumentParser()
    command.add_arguments(run_parser)
    size_sweep.add_arguments(size_parser)
    given = run_parser.parse_args(
        [
            "--experiment",
            "a",
            "--experiment",
            "b",
            "--variants",
            "x,y",
            "--soak",
            "2m",
            "--locust-workers",
            "2",
            "--locust-workers-timeout",
            "30",
            "--pg-bindir",
            "bin",
            "--fail-if",
            "x.p95_ms > 1",
        ]
    )
    overrides = Overrides.from_args(given)
    assert (overrides.experiments, overrides.variants) == (("a", "b"), ("x", "y"))
    assert overrides.fail_if == ("x.p95_ms > 1",) and not overrides.quick
    assert overrides.pg_bindir == str(Path("bin").resolve())
    assert overrides.settings() == [
        ("load.locust_workers", 2, "--locust-workers"),
        ("load.locust_workers_timeout_s", 30.0, "--locust-workers-timeout"),
        ("phases.soak_s", 120.0, "--soak"),
        ("postgres.bindir", str(Path("bin").resolve()), "--pg-bindir"),
    ]
    sized = size_parser.parse_args(
        ["--experiment", "e", "--quick", "--fail-if", "after.p95_ms > 1"]
    )
    assert Overrides.from_args(sized, thresholds=False) == Overrides(
        experiments=("e",), variants=("after",), quick=True
    )
    assert Overrides.from_args(size_parser.parse_args([])).experiments == ()


def test_a_command_line_setting_reaches_the_experiment_and_is_blamed_by_its_flag(
    tmp_path: Path,
) -> None:
    config = load_config(_write(tmp_path, MINIMAL))
    [experiment] = select(config, Overrides(load_processes=3, soak_s=5.0, locust_master_bind="::1"))
    assert (experiment.load.processes, experiment.phases.soak_s) == (3, 5.0)
    assert experiment.load.locust_master_bind == "::1"
    with pytest.raises(PoolbenchError, match=r"^--locust-workers-timeout must be positive$"):
        select(config, Overrides(locust_workers_timeout_s=0.0))


def test_the_closed_sets_of_the_file_are_enums_and_a_stray_word_is_named_where_used(
    tmp_path: Path,
) -> None:
    """The provider and the shape come back as members (the same words in run.json); a word
    outside the set in [defaults] is refused on the experiment that uses it, with the choices."""
    from poolbench.config.kinds import Provider, Shape

    text = MINIMAL + "[experiments.e.postgres]\nprovider = 'url'\n[experiments.e.load]\n"
    experiment = load_config(_write(tmp_path, text + "shape = 'spike'\n")).experiments["e"]
    assert experiment.postgres.provider is Provider.URL and experiment.load.shape is Shape.SPIKE
    assert load_config(_write(tmp_path, MINIMAL)).experiments["e"].load.shape is Shape.STEADY
    with pytest.raises(PoolbenchError) as error:
        load_config(_write(tmp_path, MINIMAL + "[defaults.postgres]\nprovider = 'cloud'\n"))
    assert str(error.value) == (
        "experiments.e.postgres.provider 'cloud' is not one of embedded, url, compose"
    )
    with pytest.raises(PoolbenchError, match=r"^quick\.load\.shape 'wave' is not one of"):
        select(
            load_config(_write(tmp_path, MINIMAL + "[quick.load]\nshape = 'wave'\n")),
            Overrides(quick=True),
        )
