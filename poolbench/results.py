"""The results directory: the contract between a run and everything that reads it.

Layout and file formats are described in docs/results.md. Writers put each file under a
temporary name and rename it into place, so a file that exists is whole; run.json is
rewritten at every phase boundary and says `partial` or `failed` unless the run ended
well. Readers reject a malformed directory with a one-line message.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from poolbench.errors import PoolbenchError
from poolbench.redact import mask_tree

SCHEMA = 1
STATUSES = ("running", "complete", "partial", "failed")
LOCUST_FILES = {
    "stats": "locust_stats.csv",
    "history": "locust_stats_history.csv",
    "failures": "locust_failures.csv",
    "exceptions": "locust_exceptions.csv",
}


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), secrets masked."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(mask_tree(data), indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def new_run_id(name: str = "") -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
    return f"{stamp}-{name}" if name else stamp


# --------------------------------------------------------------------------- writing


@dataclass
class RunRecord:
    """run.json kept current on disk while the run goes on."""

    run_dir: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls, root: Path, run_id: str, command: str, config: dict[str, Any], environment: dict
    ) -> RunRecord:
        run_dir = root / run_id
        if run_dir.exists():
            raise PoolbenchError(f"results directory {run_dir} already exists")
        run_dir.mkdir(parents=True)
        record = cls(
            run_dir,
            {
                "schema": SCHEMA,
                "run_id": run_id,
                "status": "running",
                "error": None,
                "command": command,
                "started_at": time.time(),
                "finished_at": None,
                "config": config,
                "environment": environment,
                "experiments": [],
            },
        )
        record.save()
        point_latest(root, run_dir)
        return record

    def save(self) -> None:
        write_json(self.run_dir / "run.json", self.data)

    def experiment(self, name: str, description: str) -> list[dict[str, Any]]:
        """The (new) variant list of an experiment entry."""
        for entry in self.data["experiments"]:
            if entry["name"] == name:
                return entry["variants"]
        entry = {"name": name, "description": description, "variants": []}
        self.data["experiments"].append(entry)
        return entry["variants"]

    def variant_dir(self, entry: dict[str, Any]) -> Path:
        path = self.run_dir / entry["dir"]
        path.mkdir(parents=True, exist_ok=True)
        return path

    def save_variant(self, entry: dict[str, Any]) -> None:
        """Persist one variant's entry both in its folder and in run.json."""
        write_json(self.variant_dir(entry) / "variant.json", entry)
        self.save()

    def finish(self, status: str, error: str | None = None) -> None:
        self.data.update(status=status, error=error, finished_at=time.time())
        self.save()


def point_latest(root: Path, run_dir: Path) -> None:
    """Make root/latest a symlink to run_dir, replacing the old one atomically."""
    link = root / "latest"
    tmp = root / f".latest.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, link)


# --------------------------------------------------------------------------- reading


@dataclass
class VariantResult:
    """One variant run, loaded: its metadata and its frames."""

    meta: dict[str, Any]
    path: Path
    samples: pd.DataFrame
    locust: dict[str, pd.DataFrame]

    @property
    def key(self) -> str:
        return self.meta["dir"]


@dataclass
class RunResult:
    path: Path
    meta: dict[str, Any]
    variants: list[VariantResult]

    def experiment(self, name: str) -> list[VariantResult]:
        return [v for v in self.variants if v.meta["experiment"] == name]


def read_run_json(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    if not run_dir.is_dir():
        raise PoolbenchError(f"{run_dir} is not a results directory")
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise PoolbenchError(
            f"{run_dir} has no run.json: not a poolbench results directory"
        ) from None
    except json.JSONDecodeError as exc:
        raise PoolbenchError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    for key in ("schema", "run_id", "status", "experiments"):
        if key not in meta:
            raise PoolbenchError(f"{path} lacks the key {key!r}")
    if meta["schema"] != SCHEMA:
        raise PoolbenchError(f"{path} has schema {meta['schema']}, this poolbench reads {SCHEMA}")
    if meta["status"] not in STATUSES:
        raise PoolbenchError(f"{path} has unknown status {meta['status']!r}")
    return meta


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise PoolbenchError(f"{path} is not a readable CSV: {str(exc).splitlines()[0]}") from None


def read_samples_file(path: Path) -> pd.DataFrame:
    """samples.csv as a typed frame; an absent file is an empty frame (a failed start)."""
    from poolbench.samples import read_samples

    if not path.exists():
        return pd.DataFrame(columns=["ts", "metric", "application_name", "state",
                                     "wait_event_type", "component", "value"])  # fmt: skip
    try:
        return read_samples(path)
    except (ValueError, KeyError, pd.errors.ParserError) as exc:
        raise PoolbenchError(f"{path} is malformed: {str(exc).splitlines()[0]}") from None


def load_run(run_dir: Path) -> RunResult:
    """Everything a report needs, read from disk only."""
    run_dir = Path(run_dir)
    meta = read_run_json(run_dir)
    variants = []
    for experiment in meta["experiments"]:
        for entry in experiment.get("variants", []):
            if "dir" not in entry:
                raise PoolbenchError(
                    f"{run_dir}/run.json: a variant of {experiment.get('name')!r} has no 'dir'"
                )
            path = run_dir / entry["dir"]
            locust = {key: _read_csv(path / name) for key, name in LOCUST_FILES.items()}
            variants.append(
                VariantResult(entry, path, read_samples_file(path / "samples.csv"), locust)
            )
    return RunResult(run_dir, meta, variants)
