"""The per-request file: what is written reads back exactly; a crash or damage is told apart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from poolbench.errors import PoolbenchError
from poolbench.results.requests import (
    HEADER,
    NAMES_FILE,
    REQUESTS_FILE,
    TRANSFER,
    RequestWriter,
    read_requests,
    requests_file,
)

BASE = 1_790_000_000.25
KEYS_A = [("GET", "/users/{id}"), ("POST", "/orders")]
KEYS_B = [("POST", "/orders"), ("GET", "/health")]  # another worker's own codes


def _rows(starts, responses, codes, oks) -> np.ndarray:
    rows = np.empty(len(starts), dtype=TRANSFER)
    rows["start"], rows["response_ms"], rows["name"], rows["ok"] = starts, responses, codes, oks
    rows["user"] = np.arange(len(starts)) + 7
    return rows


def _write(tmp_path: Path, close: bool = True) -> RequestWriter:
    writer = RequestWriter(tmp_path / REQUESTS_FILE, BASE)
    writer.write(
        _rows([BASE + 0.0011, BASE + 1.5], [12.4996, 1234.5678], [0, 1], [True, False]), KEYS_A
    )
    writer.write(
        _rows([BASE + 2.25, BASE + 3.0], [7.0, float("nan")], [0, 1], [True, True]),
        KEYS_B,
        worker=2,
    )
    if close:
        writer.close()
    return writer


def test_records_read_back_exactly_with_one_endpoint_table(tmp_path: Path) -> None:
    _write(tmp_path)
    log = read_requests(tmp_path / REQUESTS_FILE)
    assert len(log) == 4
    assert log.names == ("/users/{id}", "/orders", "/health")
    assert log.methods == ("GET", "POST", "GET")
    assert [log.names[c] for c in log.name] == ["/users/{id}", "/orders", "/orders", "/health"]
    # float32: exact to its 24-bit mantissa (0.1 µs at a second, 4 µs at a minute)
    np.testing.assert_array_equal(log.response_ms[:3], np.float32([12.4996, 1234.5678, 7.0]))
    assert np.isnan(log.response_ms[3])  # Locust gave no response time
    assert log.ok.tolist() == [True, False, True, True]
    assert log.worker.tolist() == [0, 0, 2, 2]
    assert log.user.tolist() == [7, 8, 7, 8]  # per worker: (worker, user) is the virtual user
    assert len(set(log.user_keys().tolist())) == 4
    np.testing.assert_allclose(log.start - BASE, [0.0011, 1.5, 2.25, 3.0], atol=0.0006)  # ms
    assert {len(log.start), len(log.response_ms), len(log.ok), len(log.name)} == {4}


def test_a_request_costs_16_bytes(tmp_path: Path) -> None:
    _write(tmp_path)
    assert (tmp_path / REQUESTS_FILE).stat().st_size == HEADER.size + 4 * 16


def test_a_crash_leaves_a_part_file_that_reads_up_to_its_last_whole_record(tmp_path: Path) -> None:
    writer = _write(tmp_path, close=False)
    partial = writer.partial
    assert not (tmp_path / REQUESTS_FILE).exists()
    with partial.open("ab") as handle:
        handle.write(b"\x01" * 7)  # a record cut by the crash
    log = read_requests(partial)
    assert len(log) == 4
    assert requests_file(tmp_path) == partial


def test_closing_renames_into_place_and_records_the_count(tmp_path: Path) -> None:
    _write(tmp_path)
    assert requests_file(tmp_path) == tmp_path / REQUESTS_FILE
    assert not (tmp_path / (REQUESTS_FILE + ".part")).exists()
    assert json.loads((tmp_path / NAMES_FILE).read_text())["count"] == 4


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-5]), "its last record is cut (11 stray bytes)"),
        (lambda p: p.write_bytes(p.read_bytes()[:-16]), "3 records where 4 were written"),
        (lambda p: p.write_bytes(b"GARBAGE!" + p.read_bytes()[8:]), "bad header"),
        (lambda p: p.write_bytes(b"short"), "5 bytes, shorter than its 32-byte header"),
        (
            lambda p: p.with_name(NAMES_FILE).unlink(),
            "its endpoint table requests.names.json is missing",
        ),
        (
            lambda p: p.with_name(NAMES_FILE).write_text("{"),
            "requests.names.json is not readable JSON",
        ),
        (
            lambda p: p.write_bytes(p.read_bytes()[:-4] + b"\x09\x00\x01\x00"),
            "an endpoint code outside",
        ),
        (
            lambda p: p.write_bytes(p.read_bytes()[:-2] + b"\x07\x00"),
            "an ok flag other than 0 or 1",
        ),
    ],
)
def test_a_damaged_file_is_a_one_line_error(tmp_path: Path, damage, message: str) -> None:
    _write(tmp_path)
    path = tmp_path / REQUESTS_FILE
    damage(path)
    with pytest.raises(PoolbenchError) as error:
        read_requests(path)
    text = str(error.value)
    assert text.startswith(f"{path} is damaged: ") and message in text
    assert "\n" not in text


def test_an_empty_load_reads_as_no_requests(tmp_path: Path) -> None:
    RequestWriter(tmp_path / REQUESTS_FILE, BASE).close()
    log = read_requests(tmp_path / REQUESTS_FILE)
    assert len(log) == 0 and log.names == ()
