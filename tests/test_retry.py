"""RetryPolicy (statefulstream/retry.py): validation, attempts, waits, server hints, what is re-raised."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from statefulstream import ConfigError, RetryPolicy


class Flaky:
    """Fails with the given exceptions in turn, then returns ``"done"``; counts calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


class BusyError(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__(f"busy (retry after {retry_after})")
        self.retry_after = retry_after


EXACT = {"initial_backoff": "100 ms", "max_backoff": "1 second", "jitter": 0}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_attempts": 0}, "max_attempts must be an int >= 1"),
    ({"max_attempts": -3}, "max_attempts must be an int >= 1"),
    ({"max_attempts": True}, "max_attempts must be an int >= 1"),
    ({"max_attempts": None}, "needs max_attempts or max_elapsed"),
    ({"max_elapsed": "0 seconds"}, "max_elapsed must be positive"),
    ({"max_elapsed": "-5 minutes"}, "max_elapsed must be positive"),
    ({"initial_backoff": "0 ms"}, "initial_backoff must be positive"),
    ({"max_backoff": dt.timedelta(seconds=-1)}, "max_backoff must be positive"),
    ({"max_retry_after": "0 seconds"}, "max_retry_after must be positive"),
    ({"initial_backoff": "2 seconds", "max_backoff": "1 second"}, "must not be below initial_backoff"),
    ({"multiplier": 0.5}, "multiplier must be a number >= 1"),
    ({"jitter": -0.1}, "jitter must be a fraction from 0 to 1"),
])
def test_impossible_limits_are_refused_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RetryPolicy(**kwargs)


def test_policies_are_values() -> None:
    assert RetryPolicy(max_elapsed="1 minute") == RetryPolicy(max_elapsed=dt.timedelta(seconds=60))
    assert hash(RetryPolicy()) == hash(RetryPolicy())
    with pytest.raises(AttributeError):
        RetryPolicy().max_attempts = 9  # type: ignore[misc]


def test_waits_grow_by_the_multiplier_up_to_the_cap() -> None:
    sleeps: list[float] = []
    flaky = Flaky(*[BusyError()] * 5)
    policy = RetryPolicy(max_attempts=6, multiplier=3, **EXACT)
    assert policy.call(flaky, retry_on=BusyError, sleep=sleeps.append) == "done"
    assert sleeps == [0.1, 0.3, 0.9, 1.0, 1.0] and flaky.calls == 6


def test_jitter_only_shortens_each_wait_within_its_fraction() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(max_attempts=40, initial_backoff="100 ms", max_backoff="100 ms", jitter=0.5)
    policy.call(Flaky(*[BusyError()] * 39), retry_on=BusyError, sleep=sleeps.append)
    assert all(0.05 <= s <= 0.1 for s in sleeps) and len(set(sleeps)) > 1


def test_after_the_last_attempt_the_last_exception_is_raised_as_it_was() -> None:
    last = BusyError()
    flaky = Flaky(BusyError(), BusyError(), last)
    with pytest.raises(BusyError) as info:
        RetryPolicy(max_attempts=3, **EXACT).call(flaky, retry_on=BusyError, sleep=lambda s: None)
    assert info.value is last and flaky.calls == 3


def test_other_exceptions_are_not_retried() -> None:
    flaky = Flaky(KeyError("bad"))
    with pytest.raises(KeyError):
        RetryPolicy(**EXACT).call(flaky, retry_on=BusyError, sleep=lambda s: None)
    assert flaky.calls == 1


def test_a_retry_after_hint_lengthens_the_wait_and_never_shortens_it() -> None:
    sleeps: list[float] = []
    flaky = Flaky(BusyError(retry_after=0.7), BusyError(retry_after=0.0))
    RetryPolicy(max_attempts=3, **EXACT).call(flaky, retry_on=BusyError, sleep=sleeps.append)
    assert sleeps == [0.7, 0.2]


def test_a_retry_after_beyond_the_policy_ends_the_retries_at_once() -> None:
    flaky = Flaky(BusyError(retry_after=120), BusyError())
    with pytest.raises(BusyError) as info:
        RetryPolicy(max_retry_after="1 minute", **EXACT).call(flaky, retry_on=BusyError, sleep=lambda s: None)
    assert info.value.retry_after == 120 and flaky.calls == 1


def test_max_elapsed_stops_a_policy_without_an_attempt_limit() -> None:
    flaky = Flaky(*[BusyError()] * 10**6)
    policy = RetryPolicy(max_attempts=None, max_elapsed="30 ms", initial_backoff="1 ms", max_backoff="2 ms")
    with pytest.raises(BusyError):
        policy.call(flaky, retry_on=BusyError)
    assert 1 < flaky.calls < 10**6


def test_on_retry_sees_each_failure_its_attempt_and_the_wait() -> None:
    seen: list[tuple[str, int, float]] = []
    errors = (BusyError(), BusyError())
    RetryPolicy(max_attempts=3, **EXACT).call(Flaky(*errors), retry_on=BusyError, sleep=lambda s: None,
                                              on_retry=lambda exc, n, wait: seen.append((str(exc), n, wait)))
    assert seen == [(str(errors[0]), 1, 0.1), (str(errors[1]), 2, 0.2)]


def test_limit_text_names_every_limit() -> None:
    assert RetryPolicy(max_attempts=3).limit_text() == "for 3 attempt(s)"
    assert RetryPolicy(max_attempts=3, max_elapsed="2 minutes").limit_text() == "for 3 attempt(s) or 120 s"


def test_every_retrying_part_takes_the_policy_and_refuses_anything_else() -> None:
    from statefulstream import App
    from statefulstream.sinks.cassandra import CassandraSink
    from statefulstream.sinks.webhook import WebhookSink

    policy = RetryPolicy(max_attempts=2)
    assert App("a", sink_retry=policy).sink_retry is policy
    assert CassandraSink(hosts="127.0.0.1", keyspace="k", table="t", retry=policy).options.retry is policy
    assert WebhookSink("https://example.com/h", retry=policy).retry is policy
    with pytest.raises(ConfigError, match="sink_retry must be a RetryPolicy"):
        App("a", sink_retry={"max_seconds": 5})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="retry must be a statefulstream RetryPolicy"):
        CassandraSink(hosts="127.0.0.1", keyspace="k", table="t", retry={"attempts": 3})


def test_the_kafka_source_retries_metadata_requests_per_policy_then_names_the_broker(
        caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import socket

    from statefulstream import SourceError
    from statefulstream.sources.kafka import KafkaSource

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    caplog.set_level(logging.INFO, logger="statefulstream.sources.kafka")
    src = KafkaSource("t", bootstrap_servers=f"127.0.0.1:{port}", read_timeout="1 second")
    try:
        with pytest.raises(SourceError, match=rf"list topics on 127.0.0.1:{port} failed for 1s: .*is the broker up"):
            src.available({})
    finally:
        src.close()
