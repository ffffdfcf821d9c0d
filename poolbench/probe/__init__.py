"""The pool probe: what an app's SQLAlchemy pools do, measured inside the app, no code change.

`site/` holds the in-app side (a `sitecustomize` and `_poolbench_probe`, standard library
only, since it runs in the app's own Python). poolbench puts that directory first on the
app's PYTHONPATH and names the variant's `probe/` folder in POOLBENCH_PROBE_DIR; every Python
process of the app (each uvicorn worker) then writes `<pid>.jsonl` and `<pid>.bin` there.
poolbench/results/pool_probe.py reads them back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

SITE_DIR = Path(__file__).resolve().parent / "site"
DIR_ENV = "POOLBENCH_PROBE_DIR"
PROBE_DIRNAME = "probe"


def probe_env(base: Mapping[str, str], probe_dir: Path) -> dict[str, str]:
    """The two variables that load the probe: PYTHONPATH (ours first) and its output folder,
    absolute: the app runs in its own directory, where a relative one would land."""
    existing = base.get("PYTHONPATH", "")
    path = os.pathsep.join([str(SITE_DIR), existing]) if existing else str(SITE_DIR)
    return {"PYTHONPATH": path, DIR_ENV: str(Path(probe_dir).resolve())}
