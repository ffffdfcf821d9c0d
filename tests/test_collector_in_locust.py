"""The collector also runs inside a Locust process (gevent-patched), from its event hooks.

That is how a live web-UI session can chart database connections beside Locust's own
numbers; this guards it before the `ui` command exists.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from poolbench.infra.postgres import Database, free_port

pytestmark = pytest.mark.e2e

LOCUSTFILE = """
import os
from locust import HttpUser, constant, events, task
from poolbench.collector import CollectorConfig, CollectorThread

collector = {}

@events.test_start.add_listener
def start_collector(environment, **kwargs):
    config = CollectorConfig(admin_url=os.environ["PB_ADMIN_URL"], out_path=os.environ["PB_OUT"])
    collector["thread"] = CollectorThread(config).start()

@events.test_stop.add_listener
def stop_collector(environment, **kwargs):
    latest = collector["thread"].stop()
    print("collector samples:", latest.get("samples"), flush=True)

class Idle(HttpUser):
    wait_time = constant(0.5)

    @task
    def nothing(self):
        self.client.get("/")
"""


def test_collector_runs_from_locust_event_hooks(pg: Database, tmp_path: Path) -> None:
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(LOCUSTFILE)
    out = tmp_path / "samples.csv"
    host = f"http://127.0.0.1:{free_port()}"  # nothing listens: the load is not the point
    command = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless"]
    proc = subprocess.run(
        [*command, "-u", "1", "-r", "1", "-t", "3s", "--host", host],
        env={"PB_ADMIN_URL": pg.admin_url, "PB_OUT": str(out), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "collector samples:" in proc.stdout, proc.stderr[-2000:]
    samples = int(proc.stdout.split("collector samples:")[1].split()[0])
    assert samples >= 10  # 10 Hz for ~3 s, under gevent
    rows = pd.read_csv(out)
    assert (rows.metric == "connections_total").sum() == samples
