"""The results reader rejects malformed folders in one line; secrets never reach a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poolbench.errors import PoolbenchError
from poolbench.redact import mask_text, mask_tree, mask_url
from poolbench.results.run_folder import RunRecord, load_run
from poolbench.results.status import Status


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
            '{"schema": 1, "run_id": "x", "status": "complete", '
            '"experiments": [{"name": "e", "variants": [{}]}]}',
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


def test_load_run_reads_every_file_of_a_variant(tmp_path: Path) -> None:
    import math

    from synthetic import seed_claim_specs, write_run

    before, after = seed_claim_specs()
    before.census = {"sites": [{"module": "app.db", "line": 3}]}
    run_dir = write_run(tmp_path, [before, after])
    # Locust writes N/A where it has no figure; an endpoint called "None" stays a string
    (run_dir / "seed-claim/before-1/locust_stats.csv").write_text(
        "Type,Name,Request Count,95%\nGET,None,3,N/A\n,Aggregated,3,N/A\n"
    )
    run = load_run(run_dir)
    assert run.warnings == []
    before_run, after_run = run.experiment("seed-claim")
    assert (before_run.experiment, before_run.variant, before_run.repeat) == (
        "seed-claim",
        "before",
        1,
    )
    stats = before_run.locust["stats"]
    assert stats["Name"].tolist() == ["None", "Aggregated"]
    assert math.isnan(stats["95%"].iloc[0])
    assert before_run.census == before.census and after_run.census is None
    assert before_run.app_log == run_dir / "seed-claim/before-1/app.log"
    assert before_run.samples["value"].dtype == "float64" and before_run.has_samples


def test_postgres_log_absence_is_explained(tmp_path: Path) -> None:
    """A url-provider run records why it has no postgres.log; the report says sampled only."""
    from synthetic import seed_claim_specs, write_run

    run_dir = write_run(tmp_path, seed_claim_specs())
    reason = "an existing server's log is not readable here: connections are sampled only"
    path = run_dir / "seed-claim/after-1/variant.json"
    entry = json.loads(path.read_text())
    path.write_text(json.dumps({**entry, "postgres_log": {"file": None, "reason": reason}}))
    before, after = load_run(run_dir).variants
    assert after.postgres_log is None and after.server_log() is None
    assert after.postgres_log_reason == reason
    assert "no postgres.log" in before.postgres_log_reason  # nothing recorded, no file


def test_load_run_warns_instead_of_failing(tmp_path: Path) -> None:
    from synthetic import seed_claim_specs, write_run

    run_dir = write_run(tmp_path, seed_claim_specs())
    # after a crash: only the collector's .part file, its last row cut mid-line
    samples = run_dir / "seed-claim/before-1/samples.csv"
    text = samples.read_text()
    samples.unlink()
    (run_dir / "seed-claim/before-1/samples.csv.part").write_text(text[: len(text) - 7])
    (run_dir / "seed-claim/after-1/samples.csv").unlink()
    meta = json.loads((run_dir / "run.json").read_text())
    meta["experiments"][0]["variants"].append({"experiment": "seed-claim", "dir": "../outside"})
    (run_dir / "run.json").write_text(json.dumps(meta))
    run = load_run(run_dir)
    assert [v.key for v in run.variants] == ["seed-claim/before-1", "seed-claim/after-1"]
    before, after = run.variants
    assert before.has_samples and len(before.samples) == text.count("\n") - 2
    assert not after.has_samples and after.samples.empty
    assert list(after.samples.columns) == list(before.samples.columns)
    assert len(run.warnings) == 3
    assert "only samples.csv.part" in run.warnings[0]
    assert "no samples.csv (variant status: complete)" in run.warnings[1]
    assert "outside the run" in run.warnings[2]


def test_two_runs_started_in_the_same_second_get_distinct_ids(tmp_path: Path) -> None:
    first = RunRecord.create(tmp_path, "20261129-051500-e", "poolbench run", {}, {})
    second = RunRecord.create(tmp_path, "20261129-051500-e", "poolbench run", {}, {})
    assert (first.run_dir.name, second.run_dir.name) == (
        "20261129-051500-e",
        "20261129-051500-e-2",
    )
    assert json.loads((second.run_dir / "run.json").read_text())["run_id"] == second.run_dir.name
    assert second.data["owner"]["pid"] > 0  # who runs it, for `poolbench clean`


def _with_rows_written(run_dir: Path, variant_dir: str) -> Path:
    """Record the collector's row count in variant.json, as the runner does."""
    samples = run_dir / variant_dir / "samples.csv"
    meta_path = run_dir / variant_dir / "variant.json"
    meta = json.loads(meta_path.read_text())
    meta["collector"] = {"rows_written": samples.read_text().count("\n") - 1}
    meta_path.write_text(json.dumps(meta))
    return samples


def test_a_cut_or_short_samples_file_is_damaged_never_read_as_whole(tmp_path: Path) -> None:
    from synthetic import seed_claim_specs, write_run

    run_dir = write_run(tmp_path, seed_claim_specs())
    whole = load_run(run_dir)
    assert not whole.damaged and whole.warnings == []
    cut = _with_rows_written(run_dir, "seed-claim/before-1")
    text = cut.read_text()
    cut.write_text(text[: len(text) // 2])  # cut in the middle of a line
    short = _with_rows_written(run_dir, "seed-claim/after-1")
    lines = short.read_text().splitlines(keepends=True)
    written = len(lines) - 1
    short.write_text("".join(lines[: len(lines) // 2]))  # whole lines, but too few
    run = load_run(run_dir)
    assert run.damaged
    before, after = run.variants
    assert before.damage[0] == "samples.csv: its last line is cut (the file was truncated)"
    assert len(before.samples) == text[: len(text) // 2].count("\n") - 1  # the cut row dropped
    assert after.damage == [
        f"samples.csv: holds {len(lines) // 2 - 1} complete rows, the collector wrote {written}"
    ]
    assert [w.split(":", 1)[0] for w in run.warnings] == [
        "seed-claim/before-1",
        "seed-claim/before-1",
        "seed-claim/after-1",
    ]
    assert all("damaged data" in w for w in run.warnings)


def test_refusals_count_app_log_records_and_locust_messages(tmp_path: Path) -> None:
    from synthetic import seed_claim_specs, write_run

    refused = (
        "ERROR:    Exception in ASGI application\n"
        "Traceback (most recent call last):\n"
        "asyncpg.exceptions.TooManyConnectionsError: sorry, too many clients already\n"
        "sqlalchemy.exc.DBAPIError: (TooManyConnectionsError) sorry, too many clients already\n"
    )
    before, after = seed_claim_specs()
    before.app_log = "INFO:     started\n" + refused * 3 + "INFO:     GET /users 200\n"
    run_dir = write_run(tmp_path, [before, after])
    (run_dir / "seed-claim/after-1/locust_failures.csv").write_text(
        "Method,Name,Error,Occurrences\n"
        "GET,/users,HTTPError('500 Server Error'),7\n"
        'GET,/items,"remaining connection slots are reserved (SQLSTATE 53300)",5\n'
    )
    before_run, after_run = load_run(run_dir).variants
    assert before_run.refusals["app_log"] == 3  # records, not the 6 lines that name it
    assert after_run.refusals == {"app_log": 0, "locust": 5, "count": 5}


@pytest.mark.slow
def test_report_on_damaged_data_says_so_and_exits_4(tmp_path: Path) -> None:
    from conftest import poolbench_cli
    from synthetic import seed_claim_specs, write_run

    run_dir = write_run(tmp_path, seed_claim_specs())
    cut = _with_rows_written(run_dir, "seed-claim/before-1")
    cut.write_text(cut.read_text()[:-5])
    proc = poolbench_cli("report", "--no-charts", str(run_dir), timeout=120)  # text is enough
    assert proc.returncode == 4, proc.stderr
    assert (
        "poolbench report: warning: damaged data: seed-claim/before-1: samples.csv: its last "
        "line is cut (the file was truncated)"
    ) in proc.stderr
    assert (run_dir / "report.html").is_file()  # the report is still written


def test_the_preflight_warning_says_who_takes_the_slots() -> None:
    from poolbench.run.preflight import slots_warning

    assert slots_warning(20, 6, 90, 100).startswith(
        "other clients hold 90 of the server's 100 connection slots: 6 are free for the app"
    )
    assert slots_warning(150, 96, 0, 100).startswith(
        "only 96 of the server's 100 connection slots are free for the app, whose pools may "
        "open 150"
    )


@pytest.mark.parametrize(
    ("run_json", "said"),
    [
        ('{"schema": 99, "run_id": "x", "status": "complete", "experiments": []}', "has schema 99"),
        ('{"run_id": "x", "status": "complete", "experiments": []}', "lacks the key 'schema'"),
        ('{"schema": 1, "status": "complete", "experiments": []}', "lacks the key 'run_id'"),
    ],
)
def test_report_on_a_foreign_run_json_is_one_line_and_fails(
    tmp_path: Path, run_json: str, said: str
) -> None:
    """An old, newer or foreign run.json: `poolbench report` names the file in one line."""
    from conftest import poolbench_cli

    (tmp_path / "run.json").write_text(run_json)
    proc = poolbench_cli("report", "--no-charts", str(tmp_path), timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "run.json") in lines[0] and said in lines[0], lines


def test_the_typed_run_record_reads_back_what_it_wrote(tmp_path: Path) -> None:
    """run.json written from the typed record reads back to an equal record, and its JSON
    keeps the order a run reaches each section (sections not reached are left out)."""
    from poolbench.results.record import (
        CollectorRecord,
        Engine,
        PgBouncerRecord,
        Pids,
        PostgresLog,
        Probe,
        RunState,
        Setup,
        VariantRecord,
    )

    record = RunRecord.create(tmp_path, "r1", "poolbench run", {"config_file": "b.toml"}, {})
    variants = record.experiment("e", "an experiment", fail_if=["p95_ms > 1"], sweep={})
    entry = VariantRecord(
        experiment="e",
        variant="v",
        repeat=1,
        dir="e/v-1",
        label="v",
        app_dir="apps",
        command=None,
        app={"workers": 2},
        load={"users": 3},
        postgres_settings={},
        workers=2,
        workers_source="experiment",
        engines=[Engine("v:app.db", 20, 0, module="app.db", kind="async", source="census")],
    )
    variants.append(entry)
    record.save_variant(entry)
    first = json.loads((tmp_path / "r1" / "e" / "v-1" / "variant.json").read_text())
    assert list(first)[-3:] == ["engines", "phases", "pids"] and first["pids"] == {}
    entry.database = {"dbname": "poolbench"}
    entry.postgres_log = PostgresLog("postgres.log", None)
    entry.pgbouncer = PgBouncerRecord({"pid": 7, "server_ceiling": 25})
    entry.pids = Pids(app=1, postmaster=2, pgbouncer=entry.pgbouncer.pid)
    entry.pids.load = 3
    entry.probe, entry.setup = Probe(True, "probe"), Setup([["make"]], "setup.log", 1.5)
    entry.collector = CollectorRecord({"profile": "default"}, 10, {"cpu_s": 0.2})
    entry.phase_started("load", 100.0)
    entry.phase_ended("load", 130.0)
    entry.pgbouncer.sampler = {"rows": 4}
    entry.end(Status.COMPLETE, None)
    record.save_variant(entry)
    record.finish(Status.COMPLETE)
    data = json.loads((tmp_path / "r1" / "run.json").read_text())
    written = data["experiments"][0]["variants"][0]
    assert written["pids"] == {"app": 1, "postmaster": 2, "pgbouncer": 7, "load": 3}
    assert written["collector"] == {"profile": "default", "rows_written": 10, "cpu_s": 0.2}
    assert written["pgbouncer"] == {"pid": 7, "server_ceiling": 25, "sampler": {"rows": 4}}
    assert list(written) == [
        "experiment",
        "variant",
        "repeat",
        "dir",
        "status",
        "error",
        "label",
        "app_dir",
        "command",
        "app",
        "load",
        "postgres_settings",
        "workers",
        "workers_source",
        "engines",
        "phases",
        "pids",
        "database",
        "postgres_log",
        "pgbouncer",
        "probe",
        "setup",
        "collector",
    ]
    assert "sweep" not in data["experiments"][0]  # an empty field is not recorded
    state = RunState.from_json(data, "run.json")
    assert state == record.state
    assert json.dumps(state.to_json()) == json.dumps(data)
    assert entry.connection_ceiling(lambda w, p, o: w * (p + o)) == 25  # PgBouncer's ceiling
    entry.pgbouncer = None
    assert entry.connection_ceiling(lambda w, p, o: w * (p + o)) == 40
