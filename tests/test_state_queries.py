"""``GET /state/{key}`` and ``GET /state?prefix=&limit=`` over real HTTP against a running app.

Both stores (RocksDB with a checkpoint, memory without); expected rows are
computed from the input records, not read back from the store.
"""

from __future__ import annotations

import collections
import json
import pathlib
import threading
import urllib.error
import urllib.request
from collections.abc import Hashable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from running_app import WAIT_S, running, wait_for

from statefulstream import App, GroupState, GroupStateTimeout
from statefulstream.memory_sink import MemorySink
from statefulstream.observe.config_view import app_config
from statefulstream.observe.state_query import key_url, parse_key
from statefulstream.sources import MemorySource

TIMEOUT_AFTER_MS = 3_600_000
LONG_8 = "al" + "x" * 40  # a str8 key (32-255 bytes)
LONG_16 = "al" + "y" * 300  # a str16 key (256+ bytes)
KEYS: list[Hashable] = ["alice", "bob", "al/ice", "~tilde", "ünï", LONG_8, LONG_16, "xal", 42, -7, 1.5, True,
                        None, ("eu", 7), ("alice", 1)]


def _records() -> list[dict[str, Any]]:
    """Two records for every third key, one for the rest; event times grow."""
    keys = [k for i, k in enumerate(KEYS) for _ in range(2 if i % 3 == 0 else 1)]
    return [{"k": list(k) if isinstance(k, tuple) else k, "ts": 1000 * (i + 1)} for i, k in enumerate(keys)]


def _expected(records: list[dict[str, Any]]) -> dict[Hashable, tuple[int, int]]:
    """``key -> (count, timeout_ms)`` as the handler below must leave it."""
    out: dict[Hashable, tuple[int, int]] = {}
    for record in records:
        key = tuple(record["k"]) if isinstance(record["k"], list) else record["k"]
        count, _ = out.get(key, (0, 0))
        out[key] = (count + 1, record["ts"] + TIMEOUT_AFTER_MS)
    return out


def _key(record: dict[str, Any]) -> Hashable:
    key = record["k"]
    return tuple(key) if isinstance(key, list) else key


def _build(source: MemorySource, checkpoint_dir: str | None, *, state_queries: bool = True,
           gate: tuple[threading.Event, threading.Event] | None = None) -> App:
    app = App("queries", source=source, checkpoint_dir=checkpoint_dir, metrics_address="127.0.0.1:0",
              state_queries=state_queries)

    @app.flat_map_groups_with_state(key=_key, event_time="ts", watermark_delay="1 hour",
                                    timeout=GroupStateTimeout.EVENT_TIME, output_mode="update", sink=MemorySink())
    def count(key: Hashable, events: list[dict[str, Any]], state: GroupState[int]) -> list[Any]:
        if state.has_timed_out:
            state.remove()
            return []
        state.update((state.get_option() or 0) + len(events))
        state.set_timeout_timestamp(max(e["ts"] for e in events) + TIMEOUT_AFTER_MS)
        if gate is not None and key == "block":
            entered, release = gate
            entered.set()
            assert release.wait(WAIT_S), "the test never released the handler"
        return []

    return app


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=WAIT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module", params=["rocksdb", "memory"])
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[Hashable, Any]]]:
    """One app per store for the read-only tests: the records committed, the app idle."""
    records = _records()
    source = MemorySource(records)
    app = _build(source, str(tmp_path_factory.mktemp("ckpt")) if request.param == "rocksdb" else None)
    with running(app) as url:
        wait_for(lambda: app.status.reports and app.status.reports[-1]["source"]["pending_records"] == 0,
                 "the records to be committed")
        yield url, _expected(records)


@given(st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text()
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda inner: st.lists(inner, min_size=1, max_size=3).map(tuple), max_leaves=6))
def test_every_url_form_parses_back_to_its_key(key: Hashable) -> None:
    url = key_url(key)
    assert url is not None and "/" not in url
    parsed = parse_key(url)
    assert parsed == key and type(parsed) is type(key)


def test_each_key_is_served_with_its_value_and_timeout(served: tuple[str, dict[Hashable, Any]]) -> None:
    url, expected = served
    for key, (count, timeout_ms) in expected.items():
        status, body = get(f"{url}/state/{key_url(key)}")
        assert status == 200, (key, body)
        assert body["value"] == count and body["timeout_ms"] == timeout_ms
        assert body["key"] == (list(key) if isinstance(key, tuple) else key)
        assert body["batch_id"] == 0
    # The documented forms, written by hand.
    for path, key in [("alice", "alice"), ("al%2Fice", "al/ice"), ("~42", 42), ("~null", None), ("~true", True),
                      ("~%5B%22eu%22%2C7%5D", ("eu", 7)), ("~%22~tilde%22", "~tilde"), ("%C3%BCn%C3%AF", "ünï")]:
        status, body = get(f"{url}/state/{path}")
        assert status == 200 and body["value"] == expected[key][0], path


def test_a_missing_key_is_404_with_a_json_error(served: tuple[str, dict[Hashable, Any]]) -> None:
    url, expected = served
    for path in ("nobody", "~43", "~%5B%22eu%22%2C8%5D", "~%22alice%20%22", "Alice"):
        status, body = get(f"{url}/state/{path}")
        assert status == 404 and "no committed state" in body["error"], path
    assert "nobody" not in expected


@pytest.mark.parametrize("path", ["/state/~%5Bnope", "/state/~%7B%22a%22%3A1%7D", "/state/a/b", "/state/%FF",
                                  "/state/alice?x=1", "/state?limit=0", "/state?limit=x", "/state?limit=1001",
                                  "/state?bogus=1", "/state?prefix"])
def test_bad_syntax_is_400_with_a_json_error(served: tuple[str, dict[Hashable, Any]], path: str) -> None:
    url, _ = served
    status, body = get(url + path)
    assert status == 400 and body["error"], body


def test_listing_by_prefix_and_limit(served: tuple[str, dict[Hashable, Any]]) -> None:
    url, expected = served
    status, body = get(f"{url}/state?prefix=al&limit=1000")
    assert status == 200 and body["truncated"] is False
    wanted = {k for k in expected if isinstance(k, str) and k.startswith("al")}
    assert {row["key"] for row in body["rows"]} == wanted == {"alice", "al/ice", LONG_8, LONG_16}
    for row in body["rows"]:
        assert (row["value"], row["timeout_ms"]) == expected[row["key"]]

    status, body = get(f"{url}/state?limit=1000")
    assert status == 200 and len(body["rows"]) == len(expected) and body["truncated"] is False
    for row in body["rows"]:  # every listed row links to itself
        assert get(f"{url}/state/{row['url']}")[1]["value"] == row["value"]

    status, body = get(f"{url}/state?prefix=&limit=3")
    assert status == 200 and len(body["rows"]) == 3 and body["truncated"] is True
    assert get(f"{url}/state?prefix=zzz")[1]["rows"] == []


@pytest.mark.parametrize("durable", [True, False], ids=["rocksdb", "memory"])
def test_a_query_during_a_batch_answers_from_the_last_commit(tmp_path: pathlib.Path, durable: bool) -> None:
    """The handler blocks mid-batch (after staging a change to "alice"); queries still answer, with batch 0."""
    source = MemorySource([{"k": "alice", "ts": 1000}])
    entered, release = threading.Event(), threading.Event()
    app = _build(source, str(tmp_path / "ckpt") if durable else None, gate=(entered, release))
    with running(app) as url:
        wait_for(lambda: len(app.status.reports) >= 1, "batch 0 to commit")
        source.add([{"k": "alice", "ts": 2000}, {"k": "block", "ts": 3000}])
        try:
            assert entered.wait(WAIT_S), "batch 1 never reached the blocking handler"
            status, body = get(f"{url}/state/alice")
            assert status == 200 and (body["value"], body["batch_id"]) == (1, 0)
            assert get(f"{url}/state/block")[0] == 404  # staged in batch 1, not committed
            listing = get(f"{url}/state?limit=10")[1]
            assert listing["batch_id"] == 0 and [r["key"] for r in listing["rows"]] == ["alice"]
        finally:
            release.set()
        wait_for(lambda: len(app.status.reports) >= 2, "batch 1 to commit")
        status, body = get(f"{url}/state/alice")
        assert status == 200 and (body["value"], body["batch_id"]) == (2, 1)
        assert get(f"{url}/state/block")[1]["value"] == 1


def test_state_queries_can_be_switched_off(tmp_path: pathlib.Path) -> None:
    app = _build(MemorySource([{"k": "alice", "ts": 1000}]), str(tmp_path / "ckpt"), state_queries=False)
    with running(app) as url:
        wait_for(lambda: len(app.status.reports) >= 1, "batch 0 to commit")
        for path in ("/state/alice", "/state?limit=5"):
            status, body = get(url + path)
            assert status == 404 and "off" in body["error"]
        with urllib.request.urlopen(url + "/api/status", timeout=WAIT_S) as response:
            assert json.loads(response.read())["config"]["state_queries"] is False


def test_the_configuration_shown_masks_secrets() -> None:
    class Webhook(MemorySink):
        def __repr__(self) -> str:
            return "Webhook(url='https://bot:hunter3@hooks.example/x', api_key='hunter4', timeout=5)"

    from statefulstream.sources.kafka import KafkaSource

    source = KafkaSource("events", bootstrap_servers="127.0.0.1:9", config={"sasl.password": "hunter2"})
    app = App("secrets", source=source)
    app.flat_map_groups_with_state(key="k", sink=Webhook())(lambda k, v, s: [])
    shown = json.dumps(app_config(app))
    assert not [secret for secret in ("hunter2", "hunter3", "hunter4") if secret in shown], shown
    assert "hooks.example" in shown and "127.0.0.1:9" in shown and "timeout=5" in shown


def test_counts_follow_the_records() -> None:
    """The expectation helper itself: every key counted once per record (guards the tests above)."""
    counts = collections.Counter(_key(r) for r in _records())
    assert {k: c for k, (c, _) in _expected(_records()).items()} == dict(counts)
    assert set(counts) == set(KEYS)
