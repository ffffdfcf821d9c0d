"""The report of a synthetic run: files, numbers against the raw files, escaping,
self-containment, and a real browser rendering it."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic import (
    EngineSpec,
    VariantSpec,
    hour_specs,
    request_arrays,
    seed_claim_specs,
    write_run,
)

from poolbench import format as fmt
from poolbench.analysis.summary import read_summary
from poolbench.config.bench import load_config
from poolbench.errors import PoolbenchError
from poolbench.report import add_arguments, build_report, run

EVIL = "<script>alert(1)</script>"
CHARTS = ("connections", "peak_idle", "memory", "marginal", "throughput", "states")
HEADLINE = "Peak connections 101 → 20 (−80.2 %)"  # the change the table shows, not rounded again
CHROMIUM = "/usr/bin/chromium"
BENCH_FILE = Path(__file__).resolve().parent.parent / "scenarios" / "bench.toml"
SEED_CLAIMS = {"seed-claim": load_config(BENCH_FILE).experiments["seed-claim"].claims}


def evil_specs() -> list[VariantSpec]:
    """A seed-like run where one engine of "before" is named with a script tag."""
    before, after = seed_claim_specs()
    before.engines.append(EngineSpec(name=f"before:{EVIL}", load=[(1.0, 1)], pool_size=1))
    return [before, after]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run_dir = write_run(tmp_path_factory.mktemp("report"), evil_specs(), claims=SEED_CLAIMS)
    build_report(run_dir)
    return run_dir


def test_every_chart_file_exists(report):
    for key in CHARTS:
        path = report / "charts" / f"seed-claim-{key}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", key
        assert path.stat().st_size > 10_000, key
    assert sorted(p.name for p in (report / "charts").iterdir()) == sorted(
        f"seed-claim-{k}.png" for k in CHARTS
    )


def _window(run_dir: Path, variant: str, start: float, end: float) -> pd.Series:
    samples = pd.read_csv(run_dir / f"seed-claim/{variant}-1/samples.csv", keep_default_na=False)
    total = samples[samples.metric == "connections_total"]
    return total[(total.ts >= start) & (total.ts < end)]["value"].astype(float)


def _phase(run_dir: Path, variant: str, phase: str) -> tuple[float, float]:
    meta = json.loads((run_dir / f"seed-claim/{variant}-1/variant.json").read_text())
    return next((p["start"], p["end"]) for p in meta["phases"] if p["name"] == phase)


def test_summary_matches_the_raw_files(report):
    """summary.json's figures recomputed from samples.csv and the requests, without analysis."""
    summary = json.loads((report / "summary.json").read_text())
    assert summary["schema"] == 4
    specs = {s.name: s for s in evil_specs()}
    for v in summary["experiments"][0]["variants"]:
        name, [f] = v["name"], v["repeats"]
        c, t = f["connections"], f["traffic"]
        load, idle = _phase(report, name, "load"), _phase(report, name, "idle")
        in_load = _window(report, name, *load)
        assert c["peak"] == in_load.max()
        assert c["p95"] == pytest.approx(in_load.quantile(0.95))
        assert c["idle"] == _window(report, name, (idle[0] + idle[1]) / 2, idle[1]).median()
        window = f["windows"]["full_load"]
        assert c["mean_full_load"] == pytest.approx(
            _window(report, name, window["start"], window["end"]).mean()
        )
        # the requests the synthetic run made: served (completed) inside the full-load window
        start, response, ok = request_arrays(specs[name])
        done = start + response / 1000
        served = (done >= window["start"]) & (done < window["end"]) & ok
        assert t["window"] == window and t["source"] == "requests"
        assert t["successes"] == served.sum() and t["failures"] == 0
        assert t["goodput"] == pytest.approx(served.sum() / (window["end"] - window["start"]))
        for q in (50, 95, 99):
            expected = np.percentile(response[served], q, method="inverted_cdf")
            # requests.bin keeps a response time as float32: the observed value, to 24 bits
            assert t["latency"][f"p{q}"] == float(np.float32(expected))
    assert summary["headline"] == HEADLINE
    assert [i["claim"]["id"] for i in summary["experiments"][0]["claims"]["items"]] == [
        "connections",
        "connections_pct",
        "pools",
        "engines",
        "memory_leak",
        "memory_reduction",
        "performance",
    ]
    # the report reads it back into the typed model, figure for figure
    assert read_summary(report).to_json() == summary


def test_markdown_and_html_open_with_the_headline(report):
    md = (report / "report.md").read_text()
    assert md.splitlines()[0] == f"# {HEADLINE}"
    page = (report / "report.html").read_text()
    assert f"<title>{HEADLINE}</title>" in page
    first_heading = re.search(r"<h([1-6])>(.*?)</h\1>", page)
    assert first_heading.group(1) == "1" and first_heading.group(2) == HEADLINE
    body = page[page.index("<body>") :]
    text = re.sub(r"<[^>]+>", " ", body[: body.index("</h1>")])
    assert HEADLINE in text
    for section in (
        "At a glance — seed-claim",
        "Claims, measured — seed-claim",
        "Right-sizing",
        "Charts",
        "Configuration vs measurement",
        "Environment",
        "Reproduce",
    ):
        assert section in md and section in page, section
    assert "poolbench run --quick" in md and "poolbench run --quick" in page


def test_names_from_the_data_are_escaped_not_run(report):
    page = (report / "report.html").read_text()
    assert EVIL not in page
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    md = (report / "report.md").read_text()
    assert EVIL not in md
    # backslash escapes, never entities: GitHub shows the name, a reader of the file too
    assert "\\<script>alert(1)\\</script>" in md and "&lt;" not in md


def test_html_is_self_contained(report):
    page = (report / "report.html").read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, flags=re.I)
    refs += re.findall(r"""url\(\s*["']?([^"')]+)""", page, flags=re.I)
    external = [r for r in refs if re.match(r"(?:https?:)?//", r, flags=re.I)]
    assert external == []
    assert not re.search(r"<(?:link|script|iframe|object|embed)\b", page, flags=re.I)
    assert "@import" not in page and "@font-face" not in page
    assert page.count("data:image/png;base64,") == len(CHARTS)
    assert all(r.startswith("data:image/png;base64,") for r in refs)


def test_markdown_links_the_charts_relatively(report):
    md = (report / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links == [f"charts/seed-claim-{k}.png" for k in CHARTS]
    assert all((report / link).is_file() for link in links)


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"
)
def test_headless_chromium_renders_the_page(report, tmp_path):
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1400,4000",
            (report / "report.html").resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1400, 4000)
        colours = image.convert("RGB").resize((70, 200)).getcolors(maxcolors=100_000)
    assert colours is not None and len(colours) > 20  # a rendered page, not a blank one


@pytest.mark.slow
def test_cli_entry_points(report, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args([str(report)])) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == HEADLINE
    assert "  holds          Connections, pool of 20 each: 100 → 20" in out.splitlines()
    assert "report.html" in out
    assert parser.parse_args([]).run_dir == Path("results/latest")
    assert parser.parse_args([str(report), "--no-charts"]).no_charts
    with pytest.raises(PoolbenchError) as info:
        run(parser.parse_args([str(report / "missing")]))
    assert "\n" not in str(info.value)


def test_census_section_only_when_census_files_exist(report, tmp_path):
    assert "Engine census" not in (report / "report.md").read_text()
    before, after = seed_claim_specs()
    before.census = {
        "sites": [
            {
                "module": "app.db",
                "line": 3,
                "kind": "async",
                "scope": "import",
                "status": "long-lived",
            }
        ]
    }
    after.census = {"sites": []}
    run_dir = write_run(tmp_path, [before, after])
    build_report(run_dir, charts=False)
    md = (run_dir / "report.md").read_text()
    assert "## Engine census" in md and "app.db" in md and "1 sites (import 1)" in md
    assert "Engine census" in (run_dir / "report.html").read_text()


@pytest.mark.slow
def test_odd_runs_still_report(tmp_path):
    # one variant only, a partial run, an experiment name that is not a safe file name
    spec = VariantSpec(name="solo", engines=[EngineSpec("s:a")], experiment="x y<&>")
    run_dir = write_run(tmp_path, [spec], status="partial")
    build_report(run_dir)
    assert sorted(p.name for p in (run_dir / "charts").iterdir()) == sorted(
        f"x-y-{k}.png" for k in CHARTS
    )
    md = (run_dir / "report.md").read_text()
    assert md.startswith("# Peak connections 20 (solo) — run partial")
    assert "run status is 'partial'" in md
    assert "## Experiment: x y\\<\\&>" in md  # backslash escapes, no entities
    assert not (tmp_path / "charts").exists()


@pytest.mark.slow
def test_repeats_several_variants_and_experiments(tmp_path):
    specs = []
    for repeat in (1, 2):
        for name, n in (("before", 3), ("after", 1), ("tuned", 1)):
            engines = [EngineSpec(f"{name}:m{i}", load=[(1.0, 10 + repeat)]) for i in range(n)]
            specs.append(
                VariantSpec(name=name, engines=engines, repeat=repeat, seed=repeat * 7 + n)
            )
    specs.append(
        VariantSpec(
            name="solo", engines=[EngineSpec("solo:a")], experiment="workers", write_locust=False
        )
    )
    run_dir = write_run(tmp_path, specs)
    build_report(run_dir)
    names = {p.name for p in (run_dir / "charts").iterdir()}
    assert names == {f"{e}-{k}.png" for e in ("seed-claim", "workers") for k in CHARTS}
    summary = json.loads((run_dir / "summary.json").read_text())
    first = summary["experiments"][0]
    assert [c["variant"] for c in first["comparisons"]] == ["after", "tuned"]
    assert [f["connections"]["peak"] for f in first["variants"][0]["repeats"]] == [33, 36]
    peak = next(r for r in first["comparisons"][0]["rows"] if r["metric"] == "peak_connections")
    assert peak["baseline"] == 34.5  # median of 33, 36
    assert summary["headline"].startswith("seed-claim: Peak connections 34.5 → 11.5")
    md = (run_dir / "report.md").read_text()
    assert "## At a glance — seed-claim: before → after" in md
    assert "### At a glance — seed-claim: before → tuned" in md
    assert "| before (median of 2) | after (median of 2) | change |" in md
    assert "| before (median of 2) | tuned (median of 2) | change |" in md


@pytest.mark.slow
def test_each_experiment_has_its_own_section(tmp_path):
    specs = [*seed_claim_specs()]
    for name, n in (("before", 3), ("after", 1)):
        engines = [EngineSpec(f"{name}:m{i}", load=[(1.0, 8)]) for i in range(n)]
        specs.append(VariantSpec(name=name, engines=engines, experiment="stock"))
    run_dir = write_run(tmp_path, specs, claims=SEED_CLAIMS)
    build_report(run_dir)
    md = (run_dir / "report.md").read_text()
    lines = md.splitlines()

    def at(text: str) -> int:
        return lines.index(text)

    seed, stock = at("## Experiment: seed-claim"), at("## Experiment: stock")
    glance = at("## At a glance — seed-claim: before → after")
    assert glance < at("## Claims, measured — seed-claim") < seed < stock
    for name, start, end in (("seed-claim", seed, stock), ("stock", stock, len(lines))):
        inside = lines[start:end]
        for heading in (
            f"### Right-sizing from measured demand — {name}",
            f"### Charts — {name}",
            f"### Configuration vs measurement — {name}",
            f"### Figures per variant — {name}",
        ):
            assert heading in inside, heading
        links = [line for line in inside if line.startswith("![")]
        assert [link.rsplit("(", 1)[1] for link in links] == [
            f"charts/{name}-{k}.png)" for k in CHARTS
        ]
    assert "### At a glance — stock: before → after" in lines[stock:]
    assert not any(line.startswith("## Right-sizing") for line in lines)
    assert not any("Claims, measured — stock" in line for line in lines)  # stock states none
    page = (run_dir / "report.html").read_text()
    assert page.count('<h2 class="experiment">') == 2
    assert page.count("data:image/png;base64,") == 2 * len(CHARTS)


def test_text_summary_formats_the_analysis_figures(tmp_path):
    from poolbench.report.summary_text import text_summary

    before, after = seed_claim_specs()
    failed = VariantSpec(name="broken", engines=[EngineSpec("b:a")], status="failed")
    run_dir = write_run(tmp_path, [before, after, failed])
    (run_dir / "seed-claim/broken-1/samples.csv").unlink()
    (run_dir / "seed-claim/broken-1/locust_stats.csv").unlink()
    text = text_summary(run_dir).splitlines()
    assert text[0] == "run 20261129-051500-synthetic: complete"
    assert text[1] == (
        "seed-claim: connections (peak during load, held when idle), full-load traffic"
    )
    build_report(run_dir, charts=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    variants = summary["experiments"][0]["variants"]
    for line, v, (peak, idle) in zip(text[2:4], variants, ((100, 100), (20, 20)), strict=True):
        t = v["repeats"][0]["traffic"]
        assert line == (
            f"  {v['name']:<12} complete  peak {peak:>4}  idle {idle:>4}  "
            f"goodput {fmt.rate(t['goodput']):>9}  failed {t['failures']:>6}  "
            f"p95 {fmt.ms(t['latency']['p95']):>8}"
        )
    assert text[4].split() == ["broken", "failed", "(no", "samples)"]
    assert len(text) == 5
    assert any("broken-1: no samples.csv" in w for w in summary["warnings"])


@pytest.mark.slow
def test_a_one_hour_run_reports(tmp_path):
    """Issue 9's one-hour run (two variants, 20 series of 36,000 samples at 10 Hz and 360,000
    requests each) reports its headline. Its time budget is `benchmarks/report_speed.py`'s."""
    run_dir = write_run(tmp_path, hour_specs(), run_id="hour")
    build_report(run_dir)
    # 8 engines × 20 before, 8 × 4 after
    assert (run_dir / "report.md").read_text().startswith("# Peak connections 160 → 32 (−80 %)")


def test_charts_draw_every_peak_and_trough_of_an_hour_at_10_hz():
    """A chart keeps, per pixel column, the lowest and the highest sample (actual samples, in
    time order), so a one-sample spike and drop of an hour at 10 Hz are drawn at their height,
    and a gap still breaks the line. (Averaging into 1,200 bins drew the spike at 15 of 160.)"""
    from poolbench.report.charts import PIXEL_COLUMNS, decimate

    ts = 1_764_000_000 + np.arange(36_000) / 10
    values = np.full(ts.size, 10.0)
    values[12_345], values[23_456] = 160.0, 0.0
    values[30_000:30_010] = np.nan
    drawn = decimate(pd.Series(values, index=ts))
    assert len(drawn) <= 3 * PIXEL_COLUMNS < ts.size / 10
    assert drawn.max() == 160.0 and drawn.min() == 0.0 and drawn.isna().any()
    assert drawn.index.is_monotonic_increasing and set(drawn.index) <= set(ts)
    # a stack: the rows where the total (the stack's top) is highest and lowest, whole rows
    stack = pd.DataFrame({"a": values / 2, "b": np.where(np.arange(ts.size) == 777, 40.0, 1.0)})
    stack.index = ts
    rows = decimate(stack.fillna(0.0))
    assert rows.sum(axis=1).max() == 81.0 and rows.sum(axis=1).min() == 1.0
    assert (rows == stack.fillna(0.0).loc[rows.index]).all().all()


def _glance(run_dir: Path) -> dict[str, str]:
    """The at-a-glance table of report.md: row label → its change cell."""
    build_report(run_dir, charts=False)
    lines = (run_dir / "report.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## At a glance"))
    rows = {}
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and len(cells) == 5:
            rows[cells[0]] = cells[4]
    return rows


def test_nothing_from_a_failed_variant_carries_a_badge(tmp_path):
    """The app's master killed mid-load: what `after` recorded until then (20 connections
    against 100) is shown, but as not measured, never as ✅ −80 % (exact)."""
    before, after = seed_claim_specs()
    after.status, after.error = "failed", "the app's master process (pid 1234) exited (signal 9)"
    cells = _glance(write_run(tmp_path, [before, after], claims=SEED_CLAIMS))
    assert cells["Peak connections"].startswith("−80 %, not measured")
    assert not [c for c in cells.values() if "✅" in c or "❌" in c]
    report = (tmp_path / "20261129-051500-synthetic/report.md").read_text()
    assert "Not measured: after-1 failed (the app's master process (pid 1234) exited" in report


def test_a_variant_capped_by_another_client_is_not_measured_not_a_verdict(tmp_path):
    """20 of 30 slots held by another client: the after app's pools (ceiling 20) had 6. Its
    connections and refusals measure that client: no badge, and its claims not measured
    rather than `does not hold`."""
    before, after = seed_claim_specs()
    after.preflight = {
        "max_connections": 30,
        "reserved": 3,
        "other_clients": 20,
        "poolbench_clients": 1,
        "free_slots": 6,
        "ceiling": 20,
    }
    run_dir = write_run(tmp_path, [before, after], claims=SEED_CLAIMS)
    cells = _glance(run_dir)
    assert cells["Peak connections"].startswith("−80 %, not measured")
    assert not [c for c in cells.values() if "✅" in c or "❌" in c]
    summary = json.loads((run_dir / "summary.json").read_text())
    judged = {j["claim"]["id"]: j for j in summary["experiments"][0]["claims"]["items"]}
    assert {j["verdict"] for j in judged.values()} == {"not measured"}
    assert (
        "after-1 was capped by another client: other clients held 20 of the server's 30 "
        in (judged["connections_pct"]["reason"])
    )


def test_every_chart_kind_has_a_drawer_and_the_six_come_first_in_report_order():
    """One registry (chart_kinds) for the document and the renderer; every kind drawn."""
    from poolbench.report import chart_kinds as kinds
    from poolbench.report.charts import _drawers

    assert set(_drawers()) == set(kinds.EXPERIMENT_KINDS)
    assert tuple(k.key for k in kinds.KINDS if k.always)[: len(CHARTS)] == CHARTS
    assert len({k.key for k in kinds.KINDS}) == len(kinds.KINDS)


def test_the_document_imports_no_matplotlib():
    """`poolbench report --no-charts` and the document's build pay for no plotting library
    (report/document.py imported report/charts/ for the Chart record: matplotlib, ~0.3 s)."""
    code = (
        "import sys, poolbench.cli, poolbench.report, poolbench.report.document, "
        "poolbench.report.html, poolbench.report.markdown; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_chart_png_has_the_pixels_savefig_writes(tmp_path):
    """Charts are encoded as RGB at zlib level 3 (cheaper than savefig's RGBA at level 6):
    the same pixels, and the same metadata, as matplotlib's own PNG."""
    from PIL import Image

    from poolbench.report import charts

    with charts.rc_context(charts.STYLE):
        fig = charts._figure(1, 2.0, "a title with text, lines and a fill")
        ax = fig.subplots()
        ax.fill_between([0, 1, 2], [0, 3, 1], alpha=0.4, label="fill")
        ax.plot([0, 1, 2], [1, 0, 2], lw=1.3, label="line")
        charts._legend(ax)
        charts._save(fig, tmp_path / "ours.png")
        fig.savefig(tmp_path / "savefig.png", dpi=charts.DPI, format="png")
    ours, theirs = (Image.open(tmp_path / f"{n}.png") for n in ("ours", "savefig"))
    assert ours.mode == "RGB"
    assert ours.info == theirs.info
    assert np.array_equal(np.asarray(ours.convert("RGBA")), np.asarray(theirs))


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [(["report", "x"], None, "1"), (["report", "x"], "3", "3"), (["lint", "."], None, "None")],
)
def test_report_runs_numpy_on_one_blas_thread_unless_told_otherwise(argv, env, expected):
    """`poolbench report` sets OPENBLAS_NUM_THREADS=1 before numpy loads (its threads only
    spin on the report's small fits); a value in the environment wins; other commands keep
    the default."""
    import os

    code = (
        "import os, sys; from poolbench.cli import build_parser; "
        f"build_parser({argv!r}); print(os.environ.get('OPENBLAS_NUM_THREADS'))"
    )
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if env is not None:
        environ["OPENBLAS_NUM_THREADS"] = env
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environ
    )
    assert done.stdout.strip() == expected
