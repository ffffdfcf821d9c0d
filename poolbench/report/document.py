"""What the report says, as a list of blocks; markdown.py and html.py only decide how it looks.

Text here is plain (never markup): every string from the data stays a string until a renderer
escapes it for its format.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolbench.analysis import FAILURE_KIND_NAMES, dig, format_count, format_pct, primary_comparison
from poolbench.report.charts import Chart


@dataclass
class Badge:
    """A short verdict shown as a coloured label; kind is one of good, mixed, bad, neutral."""

    text: str
    kind: str


Cell = str | Badge


@dataclass
class Heading:
    level: int
    text: str
    opens_experiment: bool = False  # the heading of an experiment's own section


@dataclass
class Para:
    text: str
    strong: bool = False
    muted: bool = False


@dataclass
class Notice:
    kind: str  # "warning" or "info"
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Cell]]
    align: str = ""  # one letter per column: l or r (default l)
    caption: str | None = None


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Image:
    path: Path  # absolute, under the run directory
    src: str  # relative to the report, e.g. charts/x.png
    alt: str
    caption: str


@dataclass
class Code:
    text: str


@dataclass
class Document:
    title: str
    subtitle: str
    blocks: list[Any] = field(default_factory=list)


VERDICT_KIND = {
    "holds": "good",
    "partly": "mixed",
    "does not hold": "bad",
    "not measured": "neutral",
}
FAILURE_LABELS = {
    "too_many_connections": "too many clients (SQLSTATE 53300)",
    "pool_timeout": "pool timeout",
    "timeout": "timeout",
    "connection_error": "connection error",
    "http_5xx": "HTTP 5xx",
    "http_4xx": "HTTP 4xx",
    "other": "other",
}


# --- formatting ------------------------------------------------------------------------------


def mib(value: float | None) -> str:
    if value is None:
        return "n/a"
    v = value / 1048576
    text = f"{abs(v):.0f}" if abs(v) >= 100 else f"{abs(v):.1f}"
    return f"{'−' if v < 0 and float(text) else ''}{text} MiB"


def num(value: float | None, unit: str = "", digits: int | None = None) -> str:
    if value is None:
        return "n/a"
    if digits is None:
        digits = 0 if abs(value) >= 100 or float(value).is_integer() else 1
    text = f"{abs(value):,.{digits}f}".replace(",", " ")
    sign = "−" if value < 0 and float(text.replace(" ", "")) else ""
    return f"{sign}{text}{(' ' + unit) if unit else ''}"


def count(value: float | None) -> str:
    return format_count(value)


def when(epoch: float | None) -> str:
    if epoch is None:
        return "n/a"
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def change(entry: dict[str, Any]) -> Cell:
    """The change column of a comparison: % with a significance mark for tested metrics."""
    pct = entry.get("delta_pct")
    test = entry.get("test")
    if test is not None:
        low, high = test["ci95_pct"]
        ci = f"95 % CI {format_pct(low, 1)} … {format_pct(high, 1)}"
        if not test["significant"]:
            return Badge(
                f"~ {format_pct(test['delta_pct'], 1)}, no significant difference ({ci})", "neutral"
            )
        better = (test["delta_pct"] > 0) == (entry["better"] == "higher")
        return Badge(f"{format_pct(test['delta_pct'], 1)} ({ci})", "good" if better else "bad")
    if pct is None:
        if entry.get("baseline") is not None and entry.get("baseline") == entry.get("variant"):
            return "±0"
        return "n/a"
    if abs(pct) < 0.5:
        return format_pct(pct, 1)
    better = (pct > 0) == (entry["better"] == "higher")
    return Badge(format_pct(pct), "good" if better else "bad")


# --- sections --------------------------------------------------------------------------------

GLANCE = (
    ("Peak connections (load)", "peak_connections", count),
    ("Connections held when idle", "idle_connections", count),
    ("p95 connections (load)", "p95_connections", count),
    ("PostgreSQL memory, PSS, idle", "postgres_pss_idle_bytes", mib),
    ("PostgreSQL memory, PSS, peak", "postgres_pss_peak_bytes", mib),
    ("PostgreSQL memory, USS, idle", "postgres_uss_idle_bytes", mib),
    ("App memory, USS, peak", "app_uss_peak_bytes", mib),
    ("App memory, RSS, peak", "app_rss_peak_bytes", mib),
    ("Requests/s (per second, full load)", "requests_per_s", lambda v: num(v)),
    ("Latency p95", "latency_p95_ms", lambda v: num(v, "ms")),
    ("Latency p99", "latency_p99_ms", lambda v: num(v, "ms")),
    ("Failed requests", "failures", count),
    ("New sessions/s (load)", "sessions_new_per_s", lambda v: num(v, digits=1)),
)


def _glance_table(experiment: dict[str, Any]) -> Table:
    comparisons = experiment["comparisons"]
    baseline = experiment["baseline"]
    headers = ["", baseline]
    align = "lr"
    for comparison in comparisons:
        headers += [comparison["variant"], "change"]
        align += "rl"
    rows = []
    for label, key, fmt in GLANCE:
        entries = [c[key] for c in comparisons]
        if all(e["baseline"] is None and e["variant"] is None for e in entries):
            continue
        row: list[Cell] = [label, fmt(entries[0]["baseline"])]
        for entry in entries:
            row += [fmt(entry["variant"]), change(entry)]
        rows.append(row)
    return Table(headers, rows, align)


def _lead(experiment: dict[str, Any], comparison: dict[str, Any]) -> str:
    """One sentence under the headline with the other numbers a reviewer asks for first."""
    parts = []
    idle = comparison["idle_connections"]
    if idle["baseline"] is not None and idle["variant"] is not None:
        parts.append(
            f"connections held when idle {count(idle['baseline'])} → {count(idle['variant'])}"
        )
    pss = comparison["postgres_pss_idle_bytes"]
    if pss["baseline"] is not None and pss["variant"] is not None:
        parts.append(
            f"PostgreSQL memory (PSS, idle) {mib(pss['baseline'])} → {mib(pss['variant'])}"
            + (f" ({format_pct(pss['delta_pct'])})" if pss["delta_pct"] is not None else "")
        )
    app = comparison["app_uss_peak_bytes"]
    if app["delta_pct"] is not None:
        parts.append(f"app memory (USS) {format_pct(app['delta_pct'])}")
    test = comparison["requests_per_s"].get("test")
    if test is not None:
        parts.append(
            "throughput: no significant difference"
            if not test["significant"]
            else f"throughput {format_pct(test['delta_pct'], 1)}"
        )
    text = "; ".join(parts)
    who = f"{experiment['name']}: {comparison['baseline']} → {comparison['variant']}"
    return f"{who}. {text[:1].upper()}{text[1:]}." if text else f"{who}."


def _claims_section(summary: dict[str, Any]) -> list[Any]:
    claims = summary["claims"]
    blocks: list[Any] = [Heading(2, "The seed's claims, measured")]
    if claims["experiment"]:

        def role(name: str, word: str) -> str:
            return name if name == word else f"{name} ({word})"

        blocks.append(
            Para(
                f"Each claim of the original fix, against experiment {claims['experiment']}: "
                f"{role(claims['baseline'], 'before')} vs {role(claims['variant'], 'after')}.",
                muted=True,
            )
        )
    rows = [
        [
            item["claim"],
            item["claimed"],
            item["measured"],
            Badge(item["verdict"], VERDICT_KIND[item["verdict"]]),
            item["reason"],
        ]
        for item in claims["items"]
    ]
    blocks.append(Table(["claim", "claimed", "measured", "verdict", "why"], rows, "lllll"))
    return blocks


def _right_sizing_section(experiment: dict[str, Any], explain: bool = True) -> list[Any]:
    rs = experiment["right_sizing"]
    blocks: list[Any] = [
        Heading(3, f"Right-sizing: the pool this load needs — {experiment['name']}")
    ]
    if not rs.get("measured"):
        blocks.append(
            Para("Active connections were not sampled, so no estimate is made.", muted=True)
        )
        return blocks
    workers = rs["workers"]
    per_worker = (
        f"pool_size={rs['recommended_pool_size_per_worker']}, "
        f"max_overflow={rs['recommended_max_overflow_per_worker']}"
    )
    blocks.append(
        Para(
            f"Recommended: {rs['recommended_total']} connections in total"
            + (
                f" ({per_worker} per worker × {workers} workers)"
                if workers > 1
                else f" ({per_worker}, one engine)"
            )
            + f" — {count(rs['needed'])} needed, plus {round((rs['headroom'] - 1) * 100)} % headroom.",
            strong=True,
        )
    )
    saved = []
    for s in rs["savings"]:
        if s["connections_saved_at_peak"] is None:
            continue
        n = s["connections_saved_at_peak"]
        idle = s["connections_saved_idle"]
        if n > 0:
            text = f"{n:.0f} fewer connections than {s['variant']}'s peak ({count(s['measured_peak'])} → {rs['recommended_total']})"
        else:
            text = (
                f"{-n:.0f} more than {s['variant']}'s peak of {count(s['measured_peak'])}: its pools were too small for this load"
                if n < 0
                else f"the same as {s['variant']}'s peak"
            )
        if idle is not None and idle > 0:
            text += f"; {idle:.0f} fewer held when idle"
            if s["postgres_pss_saved_idle_bytes"]:
                text += f" (≈ {mib(s['postgres_pss_saved_idle_bytes'])} of PostgreSQL PSS)"
        saved.append(text)
    if saved:
        blocks.append(Bullets(saved))
    rows = [
        [
            r["variant"],
            count(r["active_p50"]),
            count(r["active_p99"]),
            count(r["active_max"]),
            num(r["requests_per_s"]),
            num(r["hold_time_ms"], "ms", 1),
            num(r["littles_law_connections"], digits=1),
            count(r["checked_out_p99"]),
            "yes" if r["saturated"] else "no",
        ]
        for r in rs["per_variant"]
    ]
    blocks.append(
        Table(
            [
                "variant",
                "active p50",
                "active p99",
                "active max",
                "requests/s",
                "hold time",
                "Little's law L",
                "checked out p99",
                "pool saturated",
            ],
            rows,
            "lrrrrrrrl",
        )
    )
    text = (
        "How: as explained in the right-sizing of the experiment above."
        if not explain
        else (
            "How: active connections (state = active) are sampled during the load phase. The time a "
            "request holds a connection is estimated as mean active connections ÷ requests/s "
            "(Little's law read backwards: an average over all requests, including those that do not "
            "touch the database). Demand at the busiest seconds is p95 requests/s × hold time; the "
            "need is the largest of that, the p99 of active connections and, when the app reports its "
            "pools, the p99 of connections checked out of them (which also counts the time a request "
            "keeps a connection between queries)."
        )
    )
    if rs.get("cpu_count") and explain:
        text += (
            f" This machine has {rs['cpu_count']} CPU cores: PostgreSQL gains nothing from many "
            "more active connections than cores."
        )
    blocks.append(Para(text, muted=True))
    slow = [
        r
        for r in rs["per_variant"]
        if r["checked_out_p99"]
        and r["active_p99"] is not None
        and r["checked_out_p99"] > 2 * max(r["active_p99"], 1)
    ]
    if slow:
        r = slow[0]
        blocks.append(
            Para(
                f"The app keeps connections checked out much longer than PostgreSQL works on them "
                f"({r['variant']}: p99 {count(r['checked_out_p99'])} checked out, "
                f"{count(r['active_p99'])} active): a request holds its connection between queries. "
                "Releasing connections sooner (shorter sessions, no non-database work inside them) "
                "would let a smaller pool serve the same load.",
            )
        )
    if rs["saturated"]:
        blocks.append(
            Notice(
                "warning",
                "A pool was saturated (active connections reached its ceiling, or requests failed "
                "waiting for a connection): the demand seen is capped, so the need may be higher "
                "than estimated. Re-run with larger pools to measure it.",
            )
        )
    return blocks


def _model_section(experiment: dict[str, Any]) -> list[Any]:
    blocks: list[Any] = [Heading(3, f"Model vs measurement — {experiment['name']}")]
    blocks.append(
        Para(
            "Ceiling = workers × Σ (pool_size + max_overflow); idle = Σ min(workers × pool_size, "
            "connections the engine opened). Engines from variant.json, else the application names "
            "seen.",
            muted=True,
        )
    )
    for variant in experiment["variants"]:
        model = variant["metrics"]["model"]
        rows: list[list[Cell]] = []
        for e in model["engines"]:
            rows.append(
                [
                    e["name"],
                    count(e["pool_size"]),
                    count(e["max_overflow"]),
                    count(e["predicted_ceiling"]),
                    count(e["measured_peak"]),
                    count(e["predicted_idle"]),
                    count(e["measured_idle"]),
                ]
            )
        for name, e in model["unlisted"].items():
            rows.append(
                [
                    f"{name} (not in the model)",
                    "",
                    "",
                    "",
                    count(e["run_peak"]),
                    "",
                    count(e["idle"]),
                ]
            )
        rows.append(
            [
                f"total ({count(model['workers'])} worker{'s' if model['workers'] != 1 else ''})",
                "",
                "",
                count(model["predicted_ceiling"]),
                count(model["measured_peak"]),
                count(model["predicted_idle"]),
                count(model["measured_idle"]),
            ]
        )
        blocks.append(
            Table(
                [
                    "engine (application_name)",
                    "pool_size",
                    "max_overflow",
                    "predicted ceiling",
                    "measured peak",
                    "predicted idle",
                    "measured idle",
                ],
                rows,
                "lrrrrrr",
                caption=f"{variant['variant']}",
            )
        )
        for flag in model["flags"]:
            blocks.append(
                Notice("warning" if flag["level"] == "warning" else "info", flag["message"])
            )
    return blocks


def _details_section(experiment: dict[str, Any]) -> list[Any]:
    variants = experiment["variants"]
    names = [v["variant"] for v in variants]
    blocks: list[Any] = [Heading(3, f"Figures per variant — {experiment['name']}")]
    if any(len(v["repeats"]) > 1 for v in variants):
        blocks.append(
            Para(
                "Medians over repeats: "
                + ", ".join(f"{v['variant']} × {len(v['repeats'])}" for v in variants)
                + ".",
                muted=True,
            )
        )

    def m(v, *path):
        return dig(v["metrics"], path)

    rows_spec = [
        ("status", lambda v: str(m(v, "status") or "n/a")),
        ("workers", lambda v: count(m(v, "workers"))),
        ("load phase", lambda v: num(m(v, "phases_s", "load"), "s")),
        ("peak connections (load)", lambda v: count(m(v, "connections", "load_peak"))),
        ("p95 connections (load)", lambda v: count(m(v, "connections", "load_p95"))),
        ("mean connections (load)", lambda v: num(m(v, "connections", "load_mean"), digits=1)),
        (
            "connections held when idle (median, 2nd half)",
            lambda v: count(m(v, "connections", "idle")),
        ),
        ("fewest free slots (load)", lambda v: count(m(v, "connections", "slots_left_min"))),
        (
            "engines holding connections when idle",
            lambda v: count(m(v, "engine_counts", "holding_idle")),
        ),
        ("application names seen", lambda v: count(m(v, "engine_counts", "observed"))),
        ("new sessions, total", lambda v: count(m(v, "churn", "sessions_new_total"))),
        (
            "new sessions/s (load)",
            lambda v: num(m(v, "churn", "sessions_new_per_s_load"), digits=1),
        ),
        (
            "PostgreSQL PSS peak / idle",
            lambda v: (
                f"{mib(m(v, 'memory', 'postgres_pss_bytes', 'load_peak'))} / {mib(m(v, 'memory', 'postgres_pss_bytes', 'idle'))}"
            ),
        ),
        (
            "PostgreSQL USS peak / idle",
            lambda v: (
                f"{mib(m(v, 'memory', 'postgres_uss_bytes', 'load_peak'))} / {mib(m(v, 'memory', 'postgres_uss_bytes', 'idle'))}"
            ),
        ),
        (
            "PostgreSQL RSS summed (overstates: shared pages)",
            lambda v: mib(m(v, "memory", "postgres_rss_bytes", "load_peak")),
        ),
        ("PSS per idle backend", lambda v: mib(m(v, "memory", "pss_per_backend_idle_bytes"))),
        ("PostgreSQL backends, start → end of load", lambda v: _backends_change(v["metrics"])),
        (
            "PostgreSQL PSS change over the steady load (all causes, new backends included)",
            lambda v: _growth(m(v, "memory", "growth", "postgres_pss")),
        ),
        (
            "PostgreSQL PSS at constant backends and users: load; idle",
            lambda v: _leak(m(v, "memory", "leak", "postgres_pss")),
        ),
        (
            "app USS / PSS / RSS peak",
            lambda v: (
                f"{mib(m(v, 'memory', 'app_uss_bytes', 'load_peak'))} / {mib(m(v, 'memory', 'app_pss_bytes', 'load_peak'))} / {mib(m(v, 'memory', 'app_rss_bytes', 'load_peak'))}"
            ),
        ),
        (
            "app USS change over the steady load (all causes)",
            lambda v: _growth(m(v, "memory", "growth", "app_uss")),
        ),
        (
            "app USS at constant backends and users: load; idle",
            lambda v: _leak(m(v, "memory", "leak", "app_uss")),
        ),
        ("requests", lambda v: count(m(v, "locust", "requests"))),
        ("requests/s", lambda v: num(m(v, "locust", "requests_per_s"))),
        ("failed requests", lambda v: _failures(v)),
        (
            "latency p50 / p95 / p99",
            lambda v: " / ".join(
                num(m(v, "locust", "latency_ms", p), "ms") for p in ("p50", "p95", "p99")
            ),
        ),
        (
            "'too many clients' lines in app.log",
            lambda v: count(m(v, "locust", "too_many_clients_in_app_log")),
        ),
    ]
    cpu_components: list[str] = []
    for v in variants:
        for c in m(v, "cpu_percent") or {}:
            if c not in cpu_components:
                cpu_components.append(c)
    for c in cpu_components:
        rows_spec.append(
            (f"CPU {c} (% of a core, load)", lambda v, c=c: num(m(v, "cpu_percent", c), "%", 0))
        )
    rows = [[label, *(fn(v) for v in variants)] for label, fn in rows_spec]
    blocks.append(Table(["", *names], rows, "l" + "r" * len(names)))
    return blocks


def _growth(g: dict[str, Any] | None) -> str:
    """Change over a window whatever its cause: no "grows"/"flat" word, that is the leak test's."""
    if not g or g.get("pct_over_window") is None:
        return "n/a"
    return f"{format_pct(g['pct_over_window'], 1)} ({mib(g['bytes_per_min'])}/min)"


def _leak(entry: dict[str, Any] | None) -> str:
    """The leak test of one memory series: load windows; idle windows."""
    parts = []
    for phase in ("load", "idle"):
        w = (entry or {}).get(phase) or {}
        if w.get("pct_over_window") is None:
            parts.append("n/a")
            continue
        trend = {True: "grows", False: "flat", None: "too short"}[w.get("grows")]
        parts.append(f"{trend}: {format_pct(w['pct_over_window'], 1)} in {w['seconds']:.0f} s")
    return "; ".join(parts)


def _backends_change(metrics: dict[str, Any]) -> str:
    change = dig(metrics, ("memory", "leak", "load_change")) or {}
    if change.get("backends_start") is None:
        return "n/a"
    text = f"{count(change['backends_start'])} → {count(change['backends_end'])}"
    p0, p1 = change.get("pss_per_backend_start_bytes"), change.get("pss_per_backend_end_bytes")
    if p0 is not None and p1 is not None:
        text += f" ({mib(p0)} → {mib(p1)} PSS each)"
    return text


def _failures(v: dict[str, Any]) -> str:
    locust = v["metrics"]["locust"]
    total = locust["failures"]
    if total is None:
        return "n/a"
    kinds = [
        f"{FAILURE_LABELS[k]} {count(locust['failures_by_kind'].get(k))}"
        for k in FAILURE_KIND_NAMES
        if (locust["failures_by_kind"].get(k) or 0) > 0
    ]
    ratio = locust.get("failure_ratio")
    text = count(total) + (f" ({ratio * 100:.1f} %)" if ratio else "")
    return text + (": " + ", ".join(kinds) if kinds else "")


def _census_section(summary: dict[str, Any]) -> list[Any]:
    """One table per distinct census: the same app in several experiments is listed once."""
    tables: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for experiment in summary["experiments"]:
        for variant in experiment["variants"]:
            census = dig(variant["per_repeat"][0], ("engine_counts", "census"))
            if not census:
                continue
            key = json.dumps(census["list"], sort_keys=True, default=str)
            where = f"{experiment['name']} / {variant['variant']}"
            tables.setdefault(key, ([], census))[0].append(where)
    if not tables:
        return []
    blocks: list[Any] = [
        Heading(2, "Engine census"),
        Para(
            "Static census of the calls that create engines (poolbench lint), per variant.",
            muted=True,
        ),
    ]
    for where, census in tables.values():
        rows = [
            [
                str(site.get("module", "")),
                str(site.get("line", "")),
                str(site.get("kind", "")),
                str(site.get("scope", "")),
                str(site.get("status", "")),
            ]
            for site in census["list"]
        ]
        scopes = ", ".join(f"{k} {n}" for k, n in sorted(census["by_scope"].items()))
        blocks.append(
            Table(
                ["module", "line", "kind", "scope", "status"],
                rows,
                "lrlll",
                caption=f"{', '.join(where)}: {census['sites']} sites ({scopes})",
            )
        )
    return blocks


def _environment_section(summary: dict[str, Any]) -> list[Any]:
    run = summary["run"]
    env = run.get("environment") or {}
    pg = env.get("postgres") if isinstance(env.get("postgres"), dict) else {}
    rows = [
        ["run", str(run["run_id"])],
        ["status", str(run.get("status"))],
        ["started / finished", f"{when(run.get('started_at'))} / {when(run.get('finished_at'))}"],
    ]
    for key in ("python", "platform", "cpu_count", "hostname", "git_revision"):
        if env.get(key) is not None:
            rows.append([key.replace("_", " "), str(env[key])])
    for key in ("provider", "server_version", "version"):
        if pg.get(key) is not None:
            rows.append([f"PostgreSQL {key.replace('_', ' ')}", str(pg[key])])
    settings = pg.get("settings") if isinstance(pg.get("settings"), dict) else {}
    if settings:
        rows.append(["PostgreSQL settings", ", ".join(f"{k}={v}" for k, v in settings.items())])
    packages = env.get("packages") if isinstance(env.get("packages"), dict) else {}
    if packages:
        rows.append(["packages", ", ".join(f"{k} {v}" for k, v in packages.items())])
    return [Heading(2, "Environment"), Table(["", ""], rows, "ll")]


def _experiment_section(
    experiment: dict[str, Any],
    charts: list[Chart],
    run_dir: Path,
    primary: dict | None,
    explain: bool,
) -> list[Any]:
    """Everything about one experiment, under one heading that names it."""
    name = experiment["name"]
    blocks: list[Any] = [Heading(2, f"Experiment: {name}", opens_experiment=True)]
    intro = f"{experiment['description'].rstrip()} " if experiment.get("description") else ""
    variants = ", ".join(v["variant"] for v in experiment["variants"])
    intro += f"Variants: {variants} (baseline: {experiment['baseline']})."
    if experiment is primary:
        intro += f" Its comparison is “At a glance — {name}” at the top of the report."
    blocks.append(Para(intro, muted=True))
    if experiment["comparisons"] and experiment is not primary:
        blocks += [Heading(3, f"At a glance — {name}"), _glance_table(experiment)]
    blocks += _right_sizing_section(experiment, explain=explain)
    mine = [c for c in charts if c.experiment == name]
    if mine:
        blocks.append(Heading(3, f"Charts — {name}"))
        blocks += [
            Image(c.path, c.path.relative_to(run_dir).as_posix(), c.alt, f"{c.title} — {name}")
            for c in mine
        ]
    blocks += _model_section(experiment)
    blocks += _details_section(experiment)
    return blocks


def build_document(summary: dict[str, Any], charts: list[Chart], run_dir: Path) -> Document:
    run = summary["run"]
    primary = primary_comparison(summary)
    subtitle = f"poolbench report · run {run['run_id']} · status {run.get('status') or 'unknown'}"
    if run.get("started_at"):
        subtitle += f" · {when(run['started_at'])}"
    doc = Document(title=summary["headline"], subtitle=subtitle)
    add = doc.blocks.extend
    if primary is not None:
        experiment, comparison = primary
        doc.blocks.append(Para(_lead(experiment, comparison), strong=True))
    for warning in summary["warnings"]:
        doc.blocks.append(Notice("warning", warning))
    names = [e["name"] for e in summary["experiments"]]
    if len(names) > 1:
        doc.blocks.append(
            Para(f"Experiments in this run, each in its own section below: {', '.join(names)}.")
        )
    if primary is not None:
        experiment = primary[0]
        add([Heading(2, f"At a glance — {experiment['name']}"), _glance_table(experiment)])
        doc.blocks.append(
            Para(
                "Memory is PSS/USS: summing RSS over PostgreSQL's backends counts shared buffers "
                "once per process and overstates it many times. Throughput and latency are tested "
                "with a bootstrap; ~ marks no significant difference.",
                muted=True,
            )
        )
    add(_claims_section(summary))
    explained = False  # the right-sizing method is explained once, in the first estimate
    for experiment in summary["experiments"]:
        add(
            _experiment_section(
                experiment, charts, run_dir, primary[0] if primary else None, not explained
            )
        )
        explained |= bool(experiment["right_sizing"].get("measured"))
    add(_census_section(summary))
    add(_environment_section(summary))
    doc.blocks.append(Heading(2, "Reproduce"))
    command = run.get("command")
    if isinstance(command, list):
        command = " ".join(str(c) for c in command)
    doc.blocks.append(
        Code(
            (str(command) if command else "# run.json records no command")
            + f"\npoolbench report results/{run['run_id']}   # re-analyse the recorded files"
        )
    )
    return doc
