"""The report of a synthetic run: files, numbers against the samples, escaping, self-containment,
and a real browser rendering it."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from synthetic import EngineSpec, VariantSpec, seed_claim_specs, write_run

from poolbench.errors import PoolbenchError
from poolbench.report import add_arguments, build_report, run

EVIL = "<script>alert(1)</script>"
CHARTS = ("connections", "peak_idle", "memory", "throughput", "states")
HEADLINE = "Peak connections 101 → 20 (−80 %)"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A seed-like run where one engine of "before" is named with a script tag."""
    before, after = seed_claim_specs()
    before.engines.append(EngineSpec(name=f"before:{EVIL}", load=[(1.0, 1)], pool_size=1))
    run_dir = write_run(tmp_path_factory.mktemp("report"), [before, after])
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


def _load_window(run_dir: Path, variant: str, phase: str, half: bool = False) -> pd.Series:
    meta = json.loads((run_dir / f"seed-claim/{variant}-1/variant.json").read_text())
    start, end = next((p["start"], p["end"]) for p in meta["phases"] if p["name"] == phase)
    if half:
        start = (start + end) / 2
    samples = pd.read_csv(run_dir / f"seed-claim/{variant}-1/samples.csv", keep_default_na=False)
    total = samples[samples.metric == "connections_total"]
    return total[(total.ts >= start) & (total.ts < end)]["value"].astype(float)


def test_summary_matches_the_samples(report):
    summary = json.loads((report / "summary.json").read_text())
    assert summary["schema"] == 1
    for v in summary["experiments"][0]["variants"]:
        name, m = v["variant"], v["metrics"]
        load = _load_window(report, name, "load")
        idle = _load_window(report, name, "idle", half=True)
        assert m["connections"]["load_peak"] == load.max()
        assert m["connections"]["load_mean"] == pytest.approx(load.mean())
        assert m["connections"]["load_p95"] == pytest.approx(load.quantile(0.95))
        assert m["connections"]["idle"] == idle.median()
        stats = pd.read_csv(report / f"seed-claim/{name}-1/locust_stats.csv", keep_default_na=False)
        agg = stats[stats.Name == "Aggregated"].iloc[0]
        assert m["locust"]["requests"] == agg["Request Count"]
        assert m["locust"]["latency_ms"]["p95"] == agg["95%"]
    assert summary["headline"] == HEADLINE
    assert [i["id"] for i in summary["claims"]["items"]] == [
        "connections", "connections_pct", "pools", "engines",
        "memory_leak", "memory_reduction", "performance",
    ]  # fmt: skip


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
        "The seed's claims, measured",
        "Right-sizing",
        "Charts",
        "Environment",
        "Reproduce",
    ):
        assert section in md and section.replace("'", "&#x27;") in page
    assert "poolbench run --quick" in md and "poolbench run --quick" in page


def test_names_from_the_data_are_escaped_not_run(report):
    page = (report / "report.html").read_text()
    assert EVIL not in page
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    md = (report / "report.md").read_text()
    assert EVIL not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md


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
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
            "--window-size=1400,4000", (report / "report.html").resolve().as_uri(),
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1400, 4000)
        colours = image.convert("RGB").resize((70, 200)).getcolors(maxcolors=100_000)
    assert colours is not None and len(colours) > 20  # a rendered page, not a blank one


def test_cli_entry_points(report, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args([str(report)])) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == HEADLINE
    assert "report.html" in out
    assert parser.parse_args([]).run_dir == Path("results/latest")
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
    build_report(run_dir)
    md = (run_dir / "report.md").read_text()
    assert "## Engine census" in md and "app.db" in md
    assert "Engine census" in (run_dir / "report.html").read_text()


def test_odd_runs_still_report(tmp_path):
    # one variant only, a partial run, an experiment name that is not a safe file name
    spec = VariantSpec(name="solo", engines=[EngineSpec("s:a")], experiment="x y<&>")
    run_dir = write_run(tmp_path, [spec], status="partial")
    build_report(run_dir)
    assert sorted(p.name for p in (run_dir / "charts").iterdir()) == sorted(
        f"x-y-{k}.png" for k in CHARTS
    )
    md = (run_dir / "report.md").read_text()
    assert md.startswith("# Peak connections 20 (solo)")
    assert "partial" in md
    assert not (tmp_path / "charts").exists()


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
    assert first["variants"][0]["metrics"]["connections"]["load_peak"] == 34.5  # median of 33, 36
    assert summary["headline"].startswith("Peak connections 34.5 → 11.5")
    md = (run_dir / "report.md").read_text()
    assert "|   | before | after | change | tuned | change |" in md
    assert "Medians over repeats" in md


def test_each_experiment_has_its_own_section(tmp_path):
    specs = [*seed_claim_specs()]
    for name, n in (("before", 3), ("after", 1)):
        engines = [EngineSpec(f"{name}:m{i}", load=[(1.0, 8)]) for i in range(n)]
        specs.append(VariantSpec(name=name, engines=engines, experiment="stock"))
    run_dir = write_run(tmp_path, specs)
    build_report(run_dir)
    md = (run_dir / "report.md").read_text()
    lines = md.splitlines()

    def at(text: str) -> int:
        return lines.index(text)

    seed, stock = at("## Experiment: seed-claim"), at("## Experiment: stock")
    assert at("## At a glance — seed-claim") < at("## The seed's claims, measured") < seed < stock
    for name, start, end in (("seed-claim", seed, stock), ("stock", stock, len(lines))):
        inside = lines[start:end]
        for heading in (
            f"### Right-sizing: the pool this load needs — {name}",
            f"### Charts — {name}",
            f"### Model vs measurement — {name}",
            f"### Figures per variant — {name}",
        ):
            assert heading in inside, heading
        links = [line for line in inside if line.startswith("![")]
        assert [link.rsplit("(", 1)[1] for link in links] == [
            f"charts/{name}-{k}.png)" for k in CHARTS
        ]
    assert "### At a glance — stock" in lines[stock:]
    assert not any(line.startswith("## Right-sizing") for line in lines)
    page = (run_dir / "report.html").read_text()
    assert page.count('<h2 class="experiment">') == 2
    assert page.count("data:image/png;base64,") == 2 * len(CHARTS)


def test_text_summary_formats_the_analysis_figures(tmp_path):
    from poolbench.summary_text import text_summary

    before, after = seed_claim_specs()
    failed = VariantSpec(name="broken", engines=[EngineSpec("b:a")], status="failed")
    run_dir = write_run(tmp_path, [before, after, failed])
    (run_dir / "seed-claim/broken-1/samples.csv").unlink()
    (run_dir / "seed-claim/broken-1/locust_stats.csv").unlink()
    text = text_summary(run_dir).splitlines()
    assert text[0] == "run 20261129-051500-synthetic: complete"
    assert text[1] == "seed-claim: connections (peak during load, held when idle)"
    build_report(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    for line, v in zip(text[2:4], summary["experiments"][0]["variants"], strict=True):
        m = v["metrics"]
        expected = (
            f"  {v['variant']:<12} complete  peak {m['connections']['load_peak']:>4.0f}  "
            f"idle {m['connections']['idle']:>4.0f}  "
            f"requests {m['locust']['requests']:>7.0f}  failures {m['locust']['failures']:>6.0f}  "
            f"p95 {m['locust']['latency_ms']['p95']:>5.0f} ms"
        )
        assert line == expected
    assert text[4].split() == [
        "broken", "failed", "peak", "–", "idle", "–", "requests", "–", "failures", "–",
        "p95", "–", "ms",
    ]  # fmt: skip
    assert any("broken-1: no samples.csv" in w for w in summary["warnings"])
