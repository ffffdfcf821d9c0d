"""Which charts a report has: one registry the renderer and the document both read.

Kept apart from poolbench.report.charts so that reading it costs no matplotlib: the document
(and `poolbench report --no-charts`) needs the records, not the drawing. Each kind is drawn by
the function poolbench.report.charts registers for it (a test checks every kind has one).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Scope(StrEnum):
    """What one chart of a kind is drawn for."""

    EXPERIMENT = "experiment"  # one per experiment of the run
    SWEEP = "sweep"  # one per pool-size sweep


@dataclass(frozen=True)
class ChartSpec:
    """A kind of chart: its file-name key, its title and alt text, and what it is drawn for.

    `always`: drawn for every experiment (the six of issue 1); the others only when the run
    has what they show (PgBouncer samples, the pool probe's files).
    """

    key: str
    title: str
    alt: str
    scope: Scope = Scope.EXPERIMENT
    always: bool = True


@dataclass(frozen=True)
class Chart:
    """A chart written to disk: what the report shows and says about it."""

    key: str
    title: str
    path: Path
    alt: str
    experiment: str


CONNECTIONS = ChartSpec(
    "connections",
    "Connections over time, by engine",
    "Stacked area chart of connections per application_name over time for each variant, with "
    "the Locust user count on a second axis and the phases shaded.",
)
PEAK_IDLE = ChartSpec(
    "peak_idle",
    "Peak and idle connections against the model",
    "Bar chart of peak and idle connections per variant with the model's predicted ceiling "
    "and idle count marked.",
)
MEMORY = ChartSpec(
    "memory",
    "Memory over time",
    "Line charts over time per variant: PostgreSQL PSS, and the app's USS and RSS.",
)
MARGINAL = ChartSpec(
    "marginal",
    "What one more connection costs",
    "Scatter plot of PostgreSQL PSS against its number of backends per variant, with the "
    "fitted slope: the memory one more connection costs.",
)
THROUGHPUT = ChartSpec(
    "throughput",
    "Goodput and latency over time",
    "Line charts of successful and failed requests per second and response-time percentiles "
    "per variant, from every request, with the full-load window marked.",
)
STATES = ChartSpec(
    "states",
    "Connection states over time",
    "Stacked area chart of connection states (active, idle in transaction, idle) over time "
    "per variant, each with the active connections alone beneath it on their own scale.",
)
FAN_IN = ChartSpec(
    "fan_in",
    "PgBouncer: the app's connections over PostgreSQL's (fan-in)",
    "Per variant, over time: PostgreSQL backends, PgBouncer's server connections, the app's "
    "client connections to PgBouncer and the clients waiting for a server, with "
    "default_pool_size marked.",
    always=False,
)
POOL_PROBE = ChartSpec(
    "pool_probe",
    "Inside the pools",
    "Per variant, connections checked out of each engine's pools over all workers against "
    "their ceiling, and the p95 of checkout wait per second, from the app's pool probe.",
    always=False,
)
SWEEP = ChartSpec(
    "sweep",
    "Pool-size sweep",
    "Goodput and latency percentiles against pool size, with the recommended size marked.",
    scope=Scope.SWEEP,
)

# report order, per experiment
KINDS: tuple[ChartSpec, ...] = (
    CONNECTIONS,
    PEAK_IDLE,
    MEMORY,
    MARGINAL,
    THROUGHPUT,
    STATES,
    FAN_IN,
    POOL_PROBE,
    SWEEP,
)
EXPERIMENT_KINDS = tuple(k for k in KINDS if k.scope is Scope.EXPERIMENT)
