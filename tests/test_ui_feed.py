"""The Database tab's feed: what poolbench's process appends is what Locust's process serves."""

from __future__ import annotations

import json
from pathlib import Path

from poolbench.collector import Latest
from poolbench.results.pool_probe import ProbeTail
from poolbench.run.events import RunEvents, VariantRef
from poolbench.ui.feed import FeedReader, FeedWriter


def _latest(ts: float, active: int, idle: int) -> Latest:
    return Latest(
        ts=ts,
        total=active + idle,
        peak=active + idle,
        by_name_state={("before:app.db", "active"): active, ("before:app.db", "idle"): idle},
        max_connections=100,
        slots_left=97 - active - idle,
        memory={("mem_pss_bytes", "postgres", ""): 5e7, ("mem_uss_bytes", "app", ""): 8e7},
    )


def test_points_and_markers_reach_the_reader_in_order(tmp_path: Path) -> None:
    events, now = RunEvents(), [_latest(1.0, 1, 2)]
    writer = FeedWriter(
        tmp_path / "feed.jsonl", {"variant": "before", "ceiling": 20}, lambda: now[0]
    )
    writer.subscribe(events)
    ref = VariantRef("e", "before", 1, "1/1", tmp_path)
    reader = FeedReader(tmp_path / "feed.jsonl")

    events.live.fire(ref=ref, users=3, rps=10.0, failures=0, connections=3, peak=3)
    events.phase_started.fire(ref=ref, phase="load", length_s=0.0, ts=1.5)
    now[0] = _latest(2.0, 4, 1)
    events.live.fire(ref=ref, users=5, rps=20.0, failures=0, connections=5, peak=5)
    reader.poll()
    first = reader.since(-1)
    assert first["header"]["ceiling"] == 20
    assert [p["engines"]["before:app.db"] for p in first["points"]] == [
        {"active": 1, "idle": 2},
        {"active": 4, "idle": 1},
    ]
    assert first["points"][0]["pg_pss"] == 5e7 and first["points"][1]["users"] == 5
    assert [(m["phase"], m["what"]) for m in first["markers"]] == [("load", "started")]

    # A browser that has everything up to the first point gets only what came after it.
    later = reader.since(first["points"][0]["seq"])
    assert later["header"] is None
    assert [p["ts"] for p in later["points"]] == [2.0] and len(later["markers"]) == 1
    assert reader.since(first["points"][-1]["seq"])["points"] == []
    writer.close()


def test_a_line_still_being_written_waits_for_its_end(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    path.write_text('{"type": "header", "variant": "x", "seq": 1}\n{"type": "point", "ts": 1')
    reader = FeedReader(path)
    reader.poll()
    assert reader.header == {"variant": "x", "seq": 1} and not reader.points
    with path.open("a") as handle:
        handle.write('.0, "seq": 2}\n')
    reader.poll()
    assert [p["ts"] for p in reader.points] == [1.0]


def test_no_point_before_the_collector_has_sampled(tmp_path: Path) -> None:
    events = RunEvents()
    writer = FeedWriter(tmp_path / "feed.jsonl", {}, Latest)
    writer.subscribe(events)
    events.live.fire(ref=None, users=0, rps=0, failures=0, connections=0, peak=0)
    reader = FeedReader(tmp_path / "feed.jsonl")
    reader.poll()
    assert reader.header == {"seq": 1} and not reader.points
    writer.close()


def test_points_carry_what_the_pool_probe_saw_inside_the_app(tmp_path: Path) -> None:
    """Two workers' probe files (one engine, ceiling 3 each): the point sums them, and a
    sample appended later is read on the next tick (only the new bytes)."""
    folder = tmp_path / "probe"
    folder.mkdir()
    engine = {
        "type": "engine",
        "engine": 1,
        "site": "app.db:12",
        "pool_class": "QueuePool",
        "ceiling": 3,
    }
    name = {"type": "application_name", "engine": 1, "name": "app.db:12", "source": "probe"}
    for pid, out, pending in ((11, 3, 5), (12, 1, 0)):
        sample = {
            "type": "sample",
            "engine": 1,
            "t": 1.0,
            "out": out,
            "pending": pending,
            "connecting": 1 if pending else 0,
        }
        lines = [{"type": "process", "pid": pid}, engine, name, sample]
        (folder / f"{pid}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    events, ref = RunEvents(), VariantRef("e", "v", 1, "1/1", tmp_path)
    writer = FeedWriter(tmp_path / "feed.jsonl", {}, lambda: _latest(1.0, 1, 2), ProbeTail(folder))
    writer.subscribe(events)
    events.live.fire(ref=ref, users=3, rps=10.0, failures=0, connections=3, peak=3)
    with (folder / "12.jsonl").open("a") as handle:
        handle.write(json.dumps({"type": "sample", "engine": 1, "t": 2.0, "out": 3}) + "\n")
    events.live.fire(ref=ref, users=3, rps=10.0, failures=0, connections=3, peak=3)
    reader = FeedReader(tmp_path / "feed.jsonl")
    reader.poll()
    first, second = (p["pools"] for p in reader.points)
    assert first == [
        {
            "site": "app.db:12",
            "name": "app.db:12",
            "pool_class": "QueuePool",
            "out": 4,
            "ceiling": 6,
            "waiting": 4,
            "processes": 2,
        }
    ]
    assert second[0]["out"] == 6 and second[0]["waiting"] == 4
    writer.close()


def test_the_feed_header_lists_engines_a_bench_file_declares(tmp_path: Path) -> None:
    """A command variant's engines come from the bench file, without a census `kind`: the
    header lists them (old: a KeyError on 'kind' ended the session before the web UI)."""
    from conftest import REPO

    from poolbench.config.bench import load_config
    from poolbench.config.variants import Engine, Variant
    from poolbench.results.run_folder import RunRecord
    from poolbench.run.stack import new_entry
    from poolbench.ui.session import UiContext, UiSession

    config = load_config(REPO / "scenarios" / "bench.toml")
    experiment = config.experiments["seed-claim"]
    variant = Variant(name="svc", command=("uvicorn", "db:app"), engines=(Engine("svc:db", 5, 2),))
    session = UiSession(UiContext(config, experiment, variant, tmp_path, ("poolbench", "ui")))
    session.record = RunRecord(tmp_path / "run")
    entry = new_entry(experiment, variant, 1)
    header = session._feed_header(entry)
    assert header["engines"] == [
        {"name": "svc:db", "kind": None, "pool_size": 5, "max_overflow": 2}
    ]
    assert header["ceiling"] == entry.workers * 7
