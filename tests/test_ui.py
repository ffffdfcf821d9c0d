"""`poolbench ui`: Locust's web UI with the Database tab, end to end.

One real session (embedded PostgreSQL, the `before` app, the collector, Locust with its web UI)
is shared by the tests of this module, in order: the listening sockets first, then headless
Chromium drives a test through the UI, opens the Database tab, stops, and quits the session
as Ctrl-C would; the results folder it leaves must read back and report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from conftest import REPO, pid_alive, poolbench_cli

from poolbench.results.record import VariantRecord
from poolbench.results.requests import read_requests
from poolbench.results.run_folder import load_run
from poolbench.run.stack import connection_ceiling

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1500",
)
START_TIMEOUT_S = 120.0
USERS = 4
FIRST_TEST_NAMES = ("/health", "/users/{id}")  # one per user class, in requests-1.bin


@dataclass
class Session:
    """A running `poolbench ui`: its process (a session leader, as in a terminal), its output."""

    proc: subprocess.Popen
    out: Path
    lines: list[str] = field(default_factory=list)
    url: str = ""

    @property
    def run_dir(self) -> Path:
        return (self.out / "latest").resolve()

    def variant_meta(self) -> dict:
        return json.loads(
            (self.run_dir / "stock-postgres" / "before-1" / "variant.json").read_text()
        )

    def ctrl_c(self, timeout: float = 120.0) -> int:
        """SIGINT to the whole foreground group, as a terminal's Ctrl-C sends it."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout)


def _read_output(session: Session) -> None:
    for line in session.proc.stdout:
        session.lines.append(line.rstrip("\n"))


def start_session(out: Path) -> Session:
    """`poolbench ui` in a session of its own, returned once its web UI's address is out."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "poolbench",
            "ui",
            "--variant",
            "before",
            "--experiment",
            "stock-postgres",
            "--out",
            str(out),
            "--no-report",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    session = Session(proc, out)
    threading.Thread(target=_read_output, args=(session,), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not session.url:
        found = [m for line in session.lines if (m := re.search(r"Locust web UI: (\S+)", line))]
        if found:
            session.url = found[0].group(1)
        elif proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("poolbench ui did not serve its web UI:\n" + "\n".join(session.lines))
        time.sleep(0.2)
    return session


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    session = start_session(tmp_path_factory.mktemp("ui"))
    try:
        yield session
    finally:
        if session.proc.poll() is None:
            session.ctrl_c()


def _started_processes(session: Session) -> list[psutil.Process]:
    """Every process the command started: its descendants, and PostgreSQL's server (which
    pg_ctl detaches from its parent) with its children."""
    root = psutil.Process(session.proc.pid)
    procs = {p.pid: p for p in [root, *root.children(recursive=True)]}
    postmaster = psutil.Process(session.variant_meta()["pids"]["postmaster"])
    procs.update({p.pid: p for p in [postmaster, *postmaster.children()]})
    return list(procs.values())


def test_every_server_listens_on_loopback_only(ui: Session) -> None:
    listening: dict[str, set[str]] = {}
    for proc in _started_processes(ui):
        try:
            conns = proc.net_connections(kind="inet")
            name = " ".join(proc.cmdline()[:4])
        except psutil.NoSuchProcess:
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN:
                listening.setdefault(name, set()).add(conn.laddr.ip)
    assert any("postgres" in name for name in listening), listening
    assert any("uvicorn" in name for name in listening), listening
    assert any("locust" in name for name in listening), listening
    assert {ip for ips in listening.values() for ip in ips} == {"127.0.0.1"}, listening


# --------------------------------------------------------------------------- the browser


@pytest.fixture
def chromium() -> Iterator[object]:
    """Headless Debian Chromium through Debian's ChromeDriver; a fresh profile each time."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        message = f"{', '.join(missing)} missing (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs them: their absence there is a defect
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="poolbench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.2)


def _text(driver, by: str, selector: str) -> str:
    """An element's text; the tab redraws once a second, so a read that meets a replaced
    element is tried again."""
    from selenium.common.exceptions import StaleElementReferenceException

    def read() -> str:
        try:
            return driver.find_element(by, selector).text
        except StaleElementReferenceException:
            return ""

    return _wait(read, 5, f"the text of {selector}")


def _engine_totals(driver) -> dict[str, int]:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return {
            row.get_attribute("data-engine"): int(row.find_element(By.CSS_SELECTOR, ".total").text)
            for row in driver.find_elements(By.CSS_SELECTOR, "#poolbench-db-table tr[data-engine]")
        }
    except StaleElementReferenceException:  # redrawn meanwhile (once a second)
        return {}


def test_database_tab_shows_connections_then_the_session_saves_a_run(ui: Session, chromium):
    from selenium.webdriver.common.by import By

    driver = chromium
    driver.get(ui.url)
    users = _wait(lambda: driver.find_elements(By.NAME, "userCount"), 30, "the start form")
    users[0].clear()
    users[0].send_keys(str(USERS))
    rate = driver.find_element(By.NAME, "spawnRate")
    rate.clear()
    rate.send_keys(str(USERS))
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    started = time.monotonic()
    tab = _wait(
        lambda: driver.find_elements(
            By.XPATH, "//button[@role='tab'][normalize-space()='Database']"
        ),
        30,
        "the Database tab",
    )
    tab[0].click()

    # Non-zero connections under the variant's engine names, within a few seconds.
    totals = _wait(
        lambda: {k: v for k, v in _engine_totals(driver).items() if v > 0},
        10,
        "non-zero connections in the Database tab",
    )
    seen_after_s = time.monotonic() - started
    assert all(name.startswith("before:") for name in totals), totals
    meta = ui.variant_meta()
    engine_names = {e["name"] for e in meta["engines"]}
    assert set(totals) <= engine_names, (totals, engine_names)
    # Inside the pools: the app's engines by creation site, from the pool probe, live.
    pools = _wait(
        lambda: driver.find_elements(By.CSS_SELECTOR, "#poolbench-pools-table tr[data-site]"),
        10,
        "the pool probe's table",
    )
    sites = {row.get_attribute("data-site") for row in pools}
    assert all(re.fullmatch(r"app(\.\w+)*:\d+", site) for site in sites), sites
    # The model's ceiling as a line on the chart, the server's headroom and memory as tiles.
    ceiling = connection_ceiling(VariantRecord.from_json(meta, "variant.json"))
    chart = _text(driver, By.CSS_SELECTOR, "#poolbench-db svg.pb-chart")
    assert f"model ceiling: {ceiling}" in chart
    free = _text(driver, By.CSS_SELECTOR, "[data-tile='free slots']")
    assert "of max_connections 100" in free
    pss = _text(driver, By.CSS_SELECTOR, "[data-tile='PostgreSQL PSS']")
    assert re.search(r"\d+ MiB", pss), pss
    # Refreshed at least once a second: two cost lines a second apart differ.
    cost = _text(driver, By.ID, "poolbench-db-cost")
    _wait(lambda: _text(driver, By.ID, "poolbench-db-cost") != cost, 2.5, "a refresh")
    print(f"connections seen {seen_after_s:.1f} s after Start; {cost}")
    screenshot = os.environ.get("POOLBENCH_UI_SCREENSHOT")
    if screenshot:
        driver.save_screenshot(screenshot)

    # Both user classes answered (a /health call builds two engines: seconds on a busy machine).
    for name in FIRST_TEST_NAMES:
        _wait(lambda n=name: _locust_requests(ui, n) > 0, 30, f"the first test's first {name}")
    stop = driver.find_elements(
        By.XPATH, "//button[normalize-space()='Stop' or normalize-space()='STOP']"
    )
    stop[0].click()
    _wait(lambda: _status(ui)["state"] == "stopped", 15, "Locust to stop the test")
    _second_test(ui)  # the first becomes `load 1`, `idle 1` and requests-1.bin

    pids = ui.variant_meta()["pids"]
    assert ui.ctrl_c() == 0, "\n".join(ui.lines[-30:])
    for role in ("app", "postmaster", "load"):
        assert not pid_alive(pids[role]), f"{role} (pid {pids[role]}) outlived the session"

    run = load_run(ui.run_dir)
    assert run.meta["status"] == "complete"
    (variant,) = run.variants
    assert variant.samples_path is not None and variant.samples_path.name == "samples.csv"
    conns = variant.samples[variant.samples.metric == "connections"]
    assert conns[conns.application_name.str.startswith("before:")].value.max() > 0
    assert "Aggregated" in variant.locust["stats"].Name.values  # its counts: locust.json below
    phases = {p["name"]: p for p in variant.meta["phases"]}
    assert list(phases) == ["load 1", "idle 1", "load", "idle"]
    assert phases["load 1"]["end"] <= phases["idle 1"]["start"] < phases["load"]["start"]
    assert phases["load"]["start"] < phases["load"]["end"] <= phases["idle"]["start"]
    # Every request, as in a run, each test's in its own file: requests.bin is the `load`
    # phase's and holds exactly Locust's final totals (Locust clears them when a test starts).
    recorded = variant.meta["locust"]
    assert recorded["shape"] is None and recorded["tests"] == 2  # the person set the users
    assert abs(recorded["test_start"] - phases["load"]["start"]) < 0.1
    locust_totals = json.loads((variant.path / "locust.json").read_text())
    last, first = variant.requests(), read_requests(variant.path / "requests-1.bin")
    assert len(last) == recorded["requests"] == sum(e["num_requests"] for e in locust_totals)
    for log, phase in ((first, phases["load 1"]), (last, phases["load"])):
        assert len(log) > 0, phase["name"]
        assert phase["start"] - 0.001 <= log.start.min() and log.start.max() <= phase["end"]
    assert set(FIRST_TEST_NAMES) <= set(first.names)
    assert [e["event"] for e in variant.events][:1] == ["variant_started"]
    report = poolbench_cli("report", str(ui.run_dir), timeout=120)
    assert report.returncode == 0, report.stderr
    assert (ui.run_dir / "report.html").is_file()


def _second_test(session: Session) -> None:
    """A short test, started and stopped as the page's buttons do; another host is refused."""
    import httpx

    with httpx.Client(base_url=session.url, trust_env=False, timeout=10) as client:
        form = {"user_count": USERS, "spawn_rate": USERS}
        elsewhere = client.post("/swarm", data={**form, "host": "http://192.0.2.1"}).json()
        assert elsewhere["success"] is False and "loopback only" in elsewhere["message"]
        assert _status(session)["state"] == "stopped"
        client.post("/swarm", data=form).raise_for_status()
        _wait(lambda: _status(session)["state"] == "running", 15, "the second test to run")
        # a loaded machine can take seconds before the first request: wait for Locust to count
        # one (the records are checked against Locust's totals afterwards)
        _wait(lambda: _locust_requests(session) > 0, 15, "the second test's first requests")
        time.sleep(1)
        client.post("/stop").raise_for_status()
    _wait(lambda: _status(session)["state"] == "stopped", 15, "Locust to stop the second test")


def _locust_requests(session: Session, name: str = "Aggregated") -> int:
    """Requests to `name` Locust has counted in the current test: its statistics as CSV (the
    JSON view, /stats/requests, is cached for 2 s and can still show the previous test)."""
    import csv

    import httpx

    text = httpx.get(f"{session.url}/stats/requests/csv", trust_env=False, timeout=5).text
    rows = csv.DictReader(text.splitlines())
    return sum(int(r["Request Count"]) for r in rows if r["Name"] == name)


def _status(session: Session) -> dict:
    import httpx

    return httpx.get(f"{session.url}/poolbench/status", trust_env=False, timeout=5).json()


def test_ctrl_c_as_soon_as_the_address_is_out_quits_cleanly(tmp_path: Path) -> None:
    """Ctrl-C the moment the address is printed, no test started: still a clean quit (exit 0)
    and a complete, readable run, not an interrupted start-up."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "poolbench",
            "ui",
            "--experiment",
            "stock-postgres",
            "--out",
            str(tmp_path),
            "--no-report",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = []
    for line in proc.stdout:
        output.append(line)
        if line.startswith("Locust web UI: "):
            os.killpg(proc.pid, signal.SIGINT)
            break
    output.extend(proc.stdout)
    assert proc.wait(120) == 0, "".join(output)
    session = Session(proc, tmp_path)
    assert load_run(session.run_dir).meta["status"] == "complete"
    pids = session.variant_meta()["pids"]
    assert not any(pid_alive(pids[role]) for role in ("app", "postmaster", "load")), pids


def test_an_unknown_variant_is_one_line_and_exit_2() -> None:
    proc = poolbench_cli("ui", "--variant", "nope", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "nope" in proc.stderr
