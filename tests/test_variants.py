"""Starting and stopping app variants: real processes, real ports, nothing left behind."""

from __future__ import annotations

import re
import socket
import sys
import textwrap
import time
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import pid_alive

from poolbench.infra.app_server import (
    RunningVariant,
    VariantSpec,
    VariantStartError,
    port_in_use,
    start_variant,
)

pytestmark = pytest.mark.slow

UNUSED_DB = "postgresql://nobody@127.0.0.1:1/none"  # these apps never connect

TINY_APP = """
import os
from fastapi import FastAPI

app = FastAPI()

@app.get("/ping")
def ping():
    return {"pid": os.getpid()}

@app.get("/env")
def env():
    names = ["DATABASE_URL", "APP_VARIANT", "DB_POOL_SIZE", "DB_MAX_OVERFLOW", "DB_POOL_TIMEOUT",
             "EXTRA"]
    return {name: os.environ.get(name) for name in names}
"""


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An app directory laid out like apps_before/, whose app needs no database."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "app").mkdir()
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "main.py").write_text(textwrap.dedent(TINY_APP))
    return root


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_command_exiting_at_once_raises_with_log_tail_and_leaves_nothing(tmp_path: Path) -> None:
    """Even a child the command left running in the process group is killed."""
    pidfile = tmp_path / "child.pid"
    command = _python(
        f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        for i in range(30):
            print(f"log line {{i}}")
        print("fatal: no application here", flush=True)
        sys.exit(3)
        """
    )
    spec = VariantSpec(name="broken", command=command)
    variant = RunningVariant(spec, database_url=UNUSED_DB, log_path=tmp_path / "app.log")
    with pytest.raises(VariantStartError) as caught:
        variant.start()
    first, *tail = str(caught.value).splitlines()
    assert "'broken' exited with code 3" in first
    assert str(tmp_path / "app.log") in first
    assert tail[-1] == "  | fatal: no application here"
    assert "  | log line 29" in tail and "  | log line 24" not in tail  # only the tail
    assert len(tail) == 5
    assert not pid_alive(variant.pid) and variant.pids() == []
    assert not pid_alive(int(pidfile.read_text()))


def test_health_timeout_raises_and_kills_the_server(tmp_path: Path) -> None:
    """A process that runs but never answers the health path is stopped after the timeout."""
    spec = VariantSpec(
        name="deaf",
        command=[sys.executable, "-m", "http.server", "{port}", "--bind", "{host}"],
        health_path="/no-such-path",
    )
    variant = RunningVariant(
        spec, database_url=UNUSED_DB, log_path=tmp_path / "app.log", health_timeout=1.5
    )
    started = time.monotonic()
    with pytest.raises(VariantStartError) as caught:
        variant.start()
    assert time.monotonic() - started < 10
    # one self-sufficient first line (problem, URL, timeout, log path); at most the log's tail
    first, *tail = str(caught.value).splitlines()
    assert re.fullmatch(
        r"variant 'deaf' did not answer http://127\.0\.0\.1:\d+/no-such-path with 200 within "
        r"1\.5 s \(log: .*app\.log\)",
        first,
    )
    assert len(tail) <= 5 and all(line.startswith("  | ") for line in tail)
    assert variant.pids() == []
    assert not port_in_use(variant.port)  # nothing listens there any more


def test_port_already_taken_is_a_clear_error(tmp_path: Path, tiny_app: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        spec = VariantSpec(name="tiny", app_dir=tiny_app)
        variant = RunningVariant(
            spec, database_url=UNUSED_DB, log_path=tmp_path / "app.log", port=port
        )
        with pytest.raises(VariantStartError, match=rf"port {port} on 127.0.0.1 is already in use"):
            variant.start()
        assert variant.pids() == []
        assert not (tmp_path / "app.log").exists()  # refused before starting anything


def test_missing_app_dir_is_a_clear_error(tmp_path: Path) -> None:
    spec = VariantSpec(name="ghost", app_dir=tmp_path / "nope")
    with pytest.raises(VariantStartError, match=r"app directory .*nope.* not found"):
        RunningVariant(spec, database_url=UNUSED_DB, log_path=tmp_path / "app.log").start()


def test_custom_command_placeholders_and_sigkill_for_a_process_ignoring_sigterm(
    tmp_path: Path,
) -> None:
    command = _python(
        """
        import runpy, signal, sys
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.argv = ["http.server", "{port}", "--bind", "{host}"]
        runpy.run_module("http.server", run_name="__main__")
        """
    )
    spec = VariantSpec(name="stubborn", command=command, health_path="/")
    variant = RunningVariant(spec, database_url=UNUSED_DB, log_path=tmp_path / "app.log")
    with variant:
        pid = variant.pid
        assert httpx.get(variant.base_url + "/", trust_env=False).status_code == 200
        started = time.monotonic()
        variant.stop(timeout=1.0)
    assert 1.0 <= time.monotonic() - started < 5
    assert not pid_alive(pid)


def test_uvicorn_with_two_workers_env_and_stop_leaves_no_process(
    tmp_path: Path, tiny_app: Path
) -> None:
    spec = VariantSpec(name="tiny", app_dir=tiny_app, workers=2, env={"EXTRA": "yes"})
    log = tmp_path / "logs" / "tiny.log"
    with start_variant(
        spec, database_url="postgresql://u:secret@127.0.0.1:5/db", log_path=log
    ) as app:
        assert app.base_url == f"http://127.0.0.1:{app.port}"
        assert app.startup_seconds is not None and app.startup_seconds < 30
        env = httpx.get(app.base_url + "/env", trust_env=False).json()
        assert env == {
            "DATABASE_URL": "postgresql://u:secret@127.0.0.1:5/db",
            "APP_VARIANT": "tiny",
            "DB_POOL_SIZE": "5",
            "DB_MAX_OVERFLOW": "10",
            "DB_POOL_TIMEOUT": "30",
            "EXTRA": "yes",
        }
        # uvicorn's master plus two workers (and perhaps multiprocessing helpers)
        deadline = time.monotonic() + 10
        while len(app.pids()) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = app.pids()
        assert pids[0] == app.pid and len(pids) >= 3
        workers = {
            httpx.get(app.base_url + "/ping", trust_env=False).json()["pid"] for _ in range(20)
        }
        assert workers <= set(pids[1:])
        # bound to loopback only
        listening = {
            c.laddr.ip
            for pid in pids
            for c in psutil.Process(pid).net_connections("inet")
            if c.status == psutil.CONN_LISTEN
        }
        assert listening == {"127.0.0.1"}
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert app.pids() == []
    assert "Started parent process" in log.read_text()
