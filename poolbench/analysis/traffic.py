"""What the load got: goodput, failures and latency over the full-load window, from every request.

With the per-request records of poolbench's Locust plugin (requests.bin), every figure is exact
over any window: a request belongs to the window in which it was served (completed), goodput is
successful requests per second, and percentiles are over the successful requests' response
times with numpy's "inverted_cdf" method (an observed value, never an interpolation) — the same
definitions as the per-block figures of the within-run test (poolbench.analysis.block_test).
Failed requests are counted, never as throughput (a refused request is fast and would flatter
both). Without records (an older run), Locust's own totals over the whole
load phase are used and the window says so; no test is possible on them.

The per-second counts are kept (for the charts and for the within-run test, which cuts the
window into independent blocks: poolbench.analysis.compare).

Every figure over the full-load window is an average, and Little's law holds for averages, so
neither can see a trend: goodput falling from 231 to 204 /s across the window still "agrees".
Each window is therefore tested for one (`Steadiness`): the slope of goodput (and of the mean
response time) per second against time, with its interval corrected for autocorrelation
(poolbench.analysis.leak.fit_trend), and the two halves' means beside it. A window is unsteady
when the slope's whole interval is on one side of zero and the halves differ by at least
UNSTEADY_PCT; the report flags it beside the figures it affects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from poolbench import format as fmt
from poolbench.analysis.block_test import block_edges, per_block
from poolbench.analysis.series import VariantSeries
from poolbench.analysis.typed import Json, Window, num, stat
from poolbench.analysis.windows import Windows, within
from poolbench.results.failures import KIND_NAMES, classify
from poolbench.results.requests import RequestLog
from poolbench.results.run_folder import VariantResult

LITTLE_TOLERANCE_PCT = 10.0
UNSTEADY_PCT = 5.0  # halves of the full-load window differing by less than this: steady enough
MIN_STEADY_SECONDS = 8  # whole seconds in the window needed to test it
PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class Latency(Json):
    """Response times in ms of the successful requests served in a window."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    mean: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class LittleCheck(Json):
    """Closed-loop Little's law: users = throughput × (response time + think time).

    Think time is measured per user (the gap between the end of one of its requests and the
    start of its next), so the check tests the instrument — Locust's user count, the request
    timestamps and the window — not the app: a disagreement means users were idle, the load
    generator stalled or the window is not steady.
    """

    users: float
    throughput: float  # all requests started in the window, per second
    mean_response_s: float
    mean_think_s: float
    predicted_response_s: float  # users / throughput − think time
    disagreement_pct: float
    agrees: bool


@dataclass(frozen=True)
class Drift(Json):
    """One per-second series over the full-load window: its halves and its trend."""

    what: str  # "goodput" (successful requests/s) or "mean response" (ms)
    first_half: float
    second_half: float
    slope_per_s: float  # units per second
    low: float
    high: float
    change_pct: float  # second half vs first, from the two values shown
    unsteady: bool

    def describe(self) -> str:
        """E.g. "goodput 231 /s → 204 /s between the window's halves (−12 %)"."""
        show = fmt.rate if self.what == "goodput" else fmt.ms
        return (
            f"{self.what} {show(self.first_half)} → {show(self.second_half)} between the "
            f"window's halves ({fmt.pct(self.change_pct, 0)})"
        )


@dataclass(frozen=True)
class TrafficFigures(Json):
    source: str  # "requests" (every request recorded), "locust totals", or "none"
    window: Window | None
    requests: int | None = None
    successes: int | None = None
    failures: int | None = None
    goodput: float | None = None  # successful requests per second
    failures_per_s: float | None = None
    latency: Latency = field(default_factory=Latency)
    users_mean: float | None = None
    failure_kinds: dict[str, int] = field(default_factory=dict)  # whole load phase, Locust
    refusals_app_log: int | None = None  # records of SQLSTATE 53300 in app.log
    per_second: list[list[float]] = field(default_factory=list)  # [second start, ok, failed]
    littles_law: LittleCheck | None = None
    drift: list[Drift] = field(default_factory=list)  # the full-load window's trend test

    @property
    def unsteady(self) -> list[Drift]:
        return [d for d in self.drift if d.unsteady]

    @property
    def refusals(self) -> int | None:
        """Refused requests: the larger of what the app logged and what Locust saw."""
        seen = [
            v
            for v in (self.refusals_app_log, self.failure_kinds.get("too_many_connections"))
            if v is not None
        ]
        return max(seen) if seen else None


def _failure_kinds(result: VariantResult) -> dict[str, int]:
    kinds = dict.fromkeys(KIND_NAMES, 0)
    failures = result.locust.get("failures")
    if failures is None or failures.empty or not {"Error", "Occurrences"} <= set(failures.columns):
        return kinds
    for message, count in zip(failures["Error"].astype(str), failures["Occurrences"], strict=False):
        kinds[classify(message)] += int(num(count) or 0)
    return kinds


def served_in(log: RequestLog, window: Window) -> np.ndarray:
    """Requests served (completed) inside the window: when they count as served."""
    return window.contains(log.start + log.response_ms / 1000)


def per_second(log: RequestLog, window: Window) -> np.ndarray:
    """Rows of (second start, successful, failed) for every whole second of the window."""
    edges = block_edges(window.start, window.end, 1.0)
    blocks = per_block(log.start, log.response_ms, log.ok, edges)
    return np.column_stack([edges[:-1], blocks.goodput, blocks.failures])


def _latency(log: RequestLog, window: Window) -> Latency:
    whole = per_block(log.start, log.response_ms, log.ok, np.array([window.start, window.end]))
    served = log.response_ms[served_in(log, window) & log.ok]
    return Latency(
        p50=num(whole.p50_ms[0]),
        p95=num(whole.p95_ms[0]),
        p99=num(whole.p99_ms[0]),
        mean=num(whole.mean_ms[0]),
        max=float(served.max()) if served.size else None,
    )


def _users_mean(users: pd.Series, window: Window) -> float | None:
    return stat(within(users, window), "mean")


def _little(
    log: RequestLog, inside: np.ndarray, window: Window, users: float | None
) -> LittleCheck | None:
    user = log.user_keys()
    if user is None or users is None or users <= 0 or not inside.any():
        return None
    start, response_s, who = log.start[inside], log.response_ms[inside] / 1000, user[inside]
    order = np.lexsort((start, who))
    start, response_s, who = start[order], response_s[order], who[order]
    same = who[1:] == who[:-1]
    gaps = start[1:][same] - (start[:-1][same] + response_s[:-1][same])
    if gaps.size == 0:
        return None
    throughput = inside.sum() / window.seconds
    think = float(np.mean(gaps))
    mean_response = float(response_s.mean())
    predicted = users / throughput - think
    disagreement = (predicted - mean_response) / mean_response * 100 if mean_response else 0.0
    return LittleCheck(
        users=users,
        throughput=float(throughput),
        mean_response_s=mean_response,
        mean_think_s=think,
        predicted_response_s=float(predicted),
        disagreement_pct=float(disagreement),
        agrees=abs(disagreement) <= LITTLE_TOLERANCE_PCT,
    )


def _drift(what: str, values: np.ndarray, times: np.ndarray) -> Drift | None:
    from poolbench.analysis.leak import fit_trend

    keep = np.isfinite(values)
    if keep.sum() < MIN_STEADY_SECONDS:
        return None
    series = pd.Series(values[keep], index=times[keep])
    fitted = fit_trend(series)
    if fitted is None:
        return None
    slope, low, high, _ = fitted
    half = len(series) // 2
    first, second = float(series.iloc[:half].mean()), float(series.iloc[half:].mean())
    change = (second - first) / first * 100 if first else 0.0
    unsteady = (low > 0 or high < 0) and abs(change) >= UNSTEADY_PCT
    return Drift(what, first, second, slope, low, high, change, bool(unsteady))


def steadiness(log: RequestLog, window: Window) -> list[Drift]:
    """Goodput and mean response time per whole second of the window, tested for a trend."""
    edges = block_edges(window.start, window.end, 1.0)
    if edges.size < 2:
        return []
    blocks = per_block(log.start, log.response_ms, log.ok, edges)
    times = edges[:-1] + 0.5
    out = [
        _drift("goodput", np.asarray(blocks.goodput, dtype=float), times),
        _drift("mean response", np.asarray(blocks.mean_ms, dtype=float), times),
    ]
    return [d for d in out if d is not None]


def traffic_figures(result: VariantResult, s: VariantSeries, w: Windows) -> TrafficFigures:
    kinds = _failure_kinds(result)
    refusals = result.refusals["app_log"]
    log, window = s.requests, w.full_load
    if log is not None and window is not None:
        inside = served_in(log, window)
        good, bad = int((inside & log.ok).sum()), int((inside & ~log.ok).sum())
        users = _users_mean(s.users, window)
        return TrafficFigures(
            source="requests",
            window=window,
            requests=good + bad,
            successes=good,
            failures=bad,
            goodput=good / window.seconds,
            failures_per_s=bad / window.seconds,
            latency=_latency(log, window),
            users_mean=users,
            failure_kinds=kinds,
            refusals_app_log=refusals,
            per_second=per_second(log, w.load or window).tolist(),
            littles_law=_little(log, inside, window, users),
            drift=steadiness(log, window),
        )
    return _from_locust_totals(result, w, kinds, refusals)


def _from_locust_totals(
    result: VariantResult, w: Windows, kinds: dict[str, int], refusals: int | None
) -> TrafficFigures:
    stats = result.locust.get("stats")
    if stats is None or stats.empty or "Name" not in stats.columns or w.load is None:
        return TrafficFigures("none", None, failure_kinds=kinds, refusals_app_log=refusals)
    agg = stats[stats["Name"].astype(str) == "Aggregated"]
    if agg.empty:
        return TrafficFigures("none", None, failure_kinds=kinds, refusals_app_log=refusals)
    row = agg.iloc[-1]
    requests, failures = num(row.get("Request Count")), num(row.get("Failure Count")) or 0.0
    window = Window("load (Locust's totals, all requests)", w.load.start, w.load.end)
    successes = (requests or 0.0) - failures
    return TrafficFigures(
        source="locust totals",
        window=window,
        requests=int(requests) if requests is not None else None,
        successes=int(successes),
        failures=int(failures),
        goodput=successes / window.seconds,
        failures_per_s=failures / window.seconds,
        latency=Latency(
            num(row.get("50%")),
            num(row.get("95%")),
            num(row.get("99%")),
            num(row.get("Average Response Time")),
            num(row.get("Max Response Time")),
        ),
        failure_kinds=kinds,
        refusals_app_log=refusals,
    )
