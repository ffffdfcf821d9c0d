"""poolbench's Locust plugin beside plain locustfiles: real Locust against a tiny local server.

Each test builds its command with poolbench.load.locust (the one place that builds them), so what is
tested is what `poolbench run` executes.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import psutil
import pytest
from conftest import pid_alive

from poolbench.config.bench import LoadSettings
from poolbench.errors import PoolbenchError
from poolbench.infra.masked_log import log_tail
from poolbench.infra.postgres import free_port
from poolbench.infra.process_group import tree
from poolbench.load import locust as load
from poolbench.results.requests import REQUESTS_FILE, RequestLog, read_requests

pytestmark = pytest.mark.e2e

PLAIN = """
from locust import FastHttpUser, constant, task

class Client(FastHttpUser):
    wait_time = constant(0.02)

    @task(3)
    def work(self):
        self.client.get("/work")

    @task(1)
    def flaky(self):
        self.client.get("/flaky")
"""

OWN_SHAPE = (
    PLAIN
    + """
from locust import LoadTestShape

class ForeverThree(LoadTestShape):
    def tick(self):
        return 3, 3  # never ends on its own
"""
)


class _Handler(BaseHTTPRequestHandler):
    """Responses take 0-40 ms; /flaky fails half the time."""

    def do_GET(self) -> None:
        time.sleep(random.random() * 0.04)
        failed = self.path.startswith("/flaky") and random.random() < 0.5
        self.send_response(500 if failed else 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _settings(tmp_path: Path, source: str = PLAIN, **changes) -> LoadSettings:
    locustfile = tmp_path / "plain_locustfile.py"
    locustfile.write_text(source)
    return replace(
        LoadSettings(locustfile=str(locustfile), users=8, spawn_rate=8, shape="steady"), **changes
    )


def _run(settings: LoadSettings, host: str, out: Path, seconds: float = 3, during=None):
    """Run one load phase like the runner does; `during(process)` is called once it began."""
    outputs = load.LoadOutputs(out)
    cmd = load.load_command(settings, host, seconds, outputs, free_port())
    process = load.start_locust(cmd, out / "locust.log", outputs)
    try:
        process.wait_started(settings, lambda: None)
        if during is not None:
            during(process)
        code = process.wait(seconds + 30)
    finally:
        process.stop()
    assert code == 0, log_tail(out / "locust.log")
    return process


# Locust's own arithmetic, run in a child process: importing locust here would gevent-patch
# the test session. Compares Locust's final totals (locust.json, written at shutdown; the CSV is
# only rewritten every second and can miss the last requests) with the records.
LOCUST_VIEW = """
import json, sys
from collections import Counter
from locust.stats import bucket_response_time as bucket, calculate_response_time_percentile as pct
from poolbench.results.requests import read_requests

PERCENTS = (0.5, 0.95, 0.99)
entries = json.load(open(sys.argv[1]))
hist = Counter()
for e in entries:
    hist.update({int(k): v for k, v in e["response_times"].items()})
n = sum(e["num_requests"] for e in entries)
locust = {"requests": n, "failures": sum(e["num_failures"] for e in entries),
          "per_name": {e["name"]: e["num_requests"] for e in entries},
          "histogram": sorted(hist.items()), "percentiles": [pct(hist, n, p) for p in PERCENTS]}
log = read_requests(sys.argv[2])
mine = Counter(bucket(v) for v in log.response_ms)
raw = sorted(log.response_ms)
records = {"requests": len(log), "failures": int((~log.ok).sum()),
           "per_name": dict(Counter(log.names[c] for c in log.name)),
           "histogram": sorted(mine.items()),
           "percentiles": [pct(mine, len(log), p) for p in PERCENTS]}
exact = [bucket(raw[int(len(raw) * p)]) for p in PERCENTS]  # raw percentile, Locust-rounded
print(json.dumps({"locust": locust, "records": records, "exact": exact}))
"""


def _assert_records_match_locust(out: Path) -> RequestLog:
    """Same count, failures, per-endpoint counts, histogram and p50/p95/p99 as Locust's."""
    proc = subprocess.run(
        [sys.executable, "-c", LOCUST_VIEW, str(out / "locust.json"), str(out / REQUESTS_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    view = json.loads(proc.stdout)
    locust, records = view["locust"], view["records"]
    assert locust["requests"] > 200 and locust["failures"] > 0
    assert records == locust
    assert view["exact"] == locust["percentiles"]
    return read_requests(out / REQUESTS_FILE)


def test_a_plain_locustfile_runs_with_the_plugin_and_every_request_is_recorded(
    server: str, tmp_path: Path
) -> None:
    """No poolbench option reaches the user's file (it used to exit 2), and records are exact."""
    process = _run(_settings(tmp_path, shape="ramp", ramp_s=2), server, tmp_path)
    log = _assert_records_match_locust(tmp_path)
    status = process.status()
    assert status["shape"] == {"requested": "ramp", "class": "PoolbenchShape", "applied": True}
    assert status["requests"] == len(log)
    assert status["launched"] <= status["test_start"] <= log.start.min() + 0.001
    assert log.start.max() <= status["test_stop"]
    assert set(log.worker.tolist()) == {0}
    size = (tmp_path / REQUESTS_FILE).stat().st_size
    assert (size - 32) / len(log) == 16  # bytes per request
    assert not list(tmp_path.glob("*.part"))


def _listening(pid: int) -> list[tuple[str, int]]:
    found = []
    for proc in tree(pid):
        try:
            sockets = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        found += [(s.laddr.ip, s.laddr.port) for s in sockets if s.status == psutil.CONN_LISTEN]
    return found


def test_processes_master_listens_on_loopback_at_a_free_port_and_gets_every_request(
    server: str, tmp_path: Path
) -> None:
    seen: list[tuple[str, int]] = []
    process = _run(
        _settings(tmp_path, processes=2),
        server,
        tmp_path,
        during=lambda p: seen.extend(_listening(p.pid)),
    )
    assert seen, "the master listened nowhere?"
    assert {ip for ip, _ in seen} == {"127.0.0.1"}  # not *:5557, nor IPv6
    assert 5557 not in {port for _, port in seen}
    log = _assert_records_match_locust(tmp_path)
    assert set(log.worker.tolist()) == {1, 2}  # both forked workers' requests reached the master
    assert process.status()["workers"] == 2


def test_a_locustfiles_own_shape_drives_the_users_and_poolbench_says_so(
    server: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, OWN_SHAPE, shape="ramp", ramp_s=1)
    started = time.monotonic()
    process = _run(settings, server, tmp_path, seconds=3)
    assert time.monotonic() - started < 20  # its never-ending shape still stops at -t
    shape = process.status()["shape"]
    assert shape["applied"] is False and shape["class"] == "ForeverThree"
    assert shape["message"] == (
        "poolbench: the locustfile defines its own load shape ForeverThree; "
        "it drives the users and --poolbench-shape ramp is not applied"
    )
    assert shape["message"] in (tmp_path / "locust.log").read_text()
    assert load.load_record(process.status(), settings, 3)["full_load"] is None
    history = pd.read_csv(tmp_path / "locust_stats_history.csv")
    assert history["User Count"].max() == 3  # its users, not the ramp's 8


def test_workers_that_never_join_are_a_one_line_error_and_leave_no_locust(
    server: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, locust_workers=1, locust_workers_timeout_s=2)
    outputs = load.LoadOutputs(tmp_path)
    cmd = load.load_command(settings, server, 5, outputs, free_port())
    process = load.start_locust(cmd, tmp_path / "locust.log", outputs)
    with pytest.raises(PoolbenchError) as error:
        process.wait_started(settings, lambda: None)
    assert str(error.value).startswith(
        "only 0 of 1 Locust workers joined within 2 s; start each with the command printed above"
    )
    assert not pid_alive(process.pid)


def test_an_option_the_locustfile_does_not_know_is_a_one_line_error(
    server: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, locust_args=("--hold-ms", "5"))  # PLAIN has no --hold-ms
    cmd = load.warmup_command(settings, server, 2, users=1)
    with pytest.raises(PoolbenchError) as error:
        load.run_locust(cmd, tmp_path / "locust.log", 30)
    assert str(error.value).startswith(
        "Locust exited with code 2: __main__.py: error: unrecognized arguments: --hold-ms (see "
    )


def _wait_for_web_ui(client, process) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while True:
        assert process.proc.poll() is None, log_tail(process.log_path)
        assert time.monotonic() < deadline, "Locust's web UI did not answer"
        try:
            if client.get("/").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)


def _web_test(client, host: str, process, seconds: float) -> None:
    """One test from the web UI, as its Start and Stop buttons send it."""
    client.post("/swarm", data={"user_count": 8, "spawn_rate": 8, "host": host}).raise_for_status()
    time.sleep(seconds)
    client.post("/stop").raise_for_status()
    deadline = time.monotonic() + 10
    while (process.status().get("test_stop") or 0) < (process.status().get("test_start") or 1):
        assert time.monotonic() < deadline, "Locust did not stop the test"
        time.sleep(0.1)


def test_web_ui_runs_several_tests_and_requests_bin_is_the_last_ones(
    server: str, tmp_path: Path
) -> None:
    """`poolbench ui`'s Locust: no shape, every request recorded; with two tests the last one's
    requests are requests.bin, exactly Locust's final statistics, the first's requests-1.bin."""
    import httpx

    settings = _settings(tmp_path, shape="ramp")
    outputs, web_port = load.LoadOutputs(tmp_path), free_port()
    cmd = load.web_ui_command(settings, server, outputs, web_port, free_port())
    assert not {"--poolbench-shape", "--headless", "-t"} & set(cmd)
    process = load.start_locust(cmd, tmp_path / "locust.log", outputs)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{web_port}", trust_env=False) as client:
            _wait_for_web_ui(client, process)
            _web_test(client, server, process, 2)
            first = process.status()
            _web_test(client, server, process, 2)
    finally:
        process.stop()  # SIGTERM, as poolbench ui quits
    status = process.status()
    assert status["shape"] is None and status["tests"] == 2
    assert first["test_stop"] < status["test_start"]
    last = _assert_records_match_locust(tmp_path)
    assert status["requests"] == len(last)
    assert last.start.min() >= status["test_start"] - 0.001
    earlier = read_requests(tmp_path / "requests-1.bin")
    assert len(earlier) > 0
    assert first["test_start"] - 0.001 <= earlier.start.min()
    assert earlier.start.max() <= first["test_stop"]
    assert not list(tmp_path.glob("*.part"))
