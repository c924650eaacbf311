"""The duration rule (statefulstream/durations.py): every configuration duration refuses a bare number.

Each parameter family is tried with a bare int and a bare float; the error
must name the parameter and show how to write the value with a unit. The
same parameters accept a string with a unit and a ``timedelta``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from statefulstream import App, ConfigError, GroupStateTimeout, RetryPolicy, Trigger
from statefulstream.durations import ms_or_duration, parse_duration_ms
from statefulstream.sinks.cassandra import CassandraSink
from statefulstream.sinks.kafka import KafkaSink
from statefulstream.sinks.webhook import PagerDutySink, WebhookSink
from statefulstream.sources.kafka import KafkaSource
from statefulstream.testing import make_group_state
from statefulstream.windows import count, session, sliding, tumbling

HOOK = "https://hooks.example.com/x"


def _decorate(delay: Any) -> None:
    App("a").flat_map_groups_with_state(key="k", event_time="ts", watermark_delay=delay)(lambda k, v, s: [])


def _aggregate(delay: Any) -> None:
    App("a").aggregate(key="k", event_time="ts", window=tumbling("1 minute"), watermark_delay=delay,
                       aggs={"n": count()})


def _ahead(ahead: Any) -> None:
    App("a").flat_map_groups_with_state(key="k", event_time="ts", watermark_delay="1 minute",
                                        max_event_time_ahead=ahead)(lambda k, v, s: [])


# parameter family -> (a call taking the duration, the name the message must start with)
FAMILIES: dict[str, tuple[Callable[[Any], object], str]] = {
    "App health_timeout": (lambda v: App("a", health_timeout=v), "health_timeout"),
    "App trigger": (lambda v: App("a", trigger=v), "trigger interval"),
    "Trigger.processing_time": (Trigger.processing_time, "trigger interval"),
    "operator watermark_delay": (_decorate, "flat_map_groups_with_state: watermark_delay"),
    "aggregate watermark_delay": (_aggregate, "aggregate: watermark_delay"),
    "max_event_time_ahead": (_ahead, "flat_map_groups_with_state: max_event_time_ahead"),
    "tumbling size": (tumbling, "tumbling: size"),
    "tumbling offset": (lambda v: tumbling("1 hour", offset=v), "tumbling: offset"),
    "sliding every": (lambda v: sliding("1 hour", v), "sliding: every"),
    "session gap": (session, "session: gap"),
    "KafkaSource read_timeout": (lambda v: KafkaSource("t", bootstrap_servers="127.0.0.1:1", read_timeout=v),
                                 "read_timeout"),
    "KafkaSink timeout": (lambda v: KafkaSink("t", bootstrap_servers="127.0.0.1:1", timeout=v), "timeout"),
    "CassandraSink request_timeout": (lambda v: CassandraSink(hosts="127.0.0.1", keyspace="k", table="t",
                                                              request_timeout=v), "request_timeout"),
    "CassandraSink ttl": (lambda v: CassandraSink(hosts="127.0.0.1", keyspace="k", table="t", ttl=v), "ttl"),
    "WebhookSink timeout": (lambda v: WebhookSink(HOOK, timeout=v), "WebhookSink timeout"),
    "PagerDutySink timeout": (lambda v: PagerDutySink("key", timeout=v), "PagerDutySink timeout"),
    "RetryPolicy max_elapsed": (lambda v: RetryPolicy(max_elapsed=v), "RetryPolicy max_elapsed"),
    "RetryPolicy initial_backoff": (lambda v: RetryPolicy(initial_backoff=v), "RetryPolicy initial_backoff"),
    "RetryPolicy max_backoff": (lambda v: RetryPolicy(max_backoff=v), "RetryPolicy max_backoff"),
    "RetryPolicy max_retry_after": (lambda v: RetryPolicy(max_retry_after=v), "RetryPolicy max_retry_after"),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("number", [20, 2.5])
def test_a_bare_number_is_refused_with_the_unit_to_write(family: str, number: float) -> None:
    call, name = FAMILIES[family]
    with pytest.raises(ConfigError) as info:
        call(number)
    message = str(info.value)
    assert message.startswith(f"{name}: a bare number ({number!r}) is ambiguous"), message
    assert f"'{number:g} seconds'" in message and "timedelta" in message


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("value", ["20 seconds", dt.timedelta(seconds=20)])
def test_a_unit_or_a_timedelta_is_accepted(family: str, value: Any) -> None:
    call, _ = FAMILIES[family]
    if family == "tumbling offset":
        value = "20 minutes" if isinstance(value, str) else dt.timedelta(minutes=20)
    call(value)


def test_string_and_timedelta_mean_the_same() -> None:
    for text, delta in [("20 seconds", dt.timedelta(seconds=20)), ("1 hour 30 minutes", dt.timedelta(minutes=90)),
                        ("250 ms", dt.timedelta(milliseconds=250))]:
        assert parse_duration_ms(text) == parse_duration_ms(delta) == delta // dt.timedelta(milliseconds=1)


class TestSparkMillisecondApisKeepNumbers:
    """GroupState's timeout calls and the manual clock are Spark's millisecond APIs: numbers stay ms."""

    def test_set_timeout_duration_takes_ms(self) -> None:
        state = make_group_state(timeout=GroupStateTimeout.PROCESSING_TIME, batch_processing_time_ms=1000)
        state.set_timeout_duration(1500)
        assert state.outcome(-1).timeout_ms == 2500

    def test_manual_clock_helper_takes_ms(self) -> None:
        assert ms_or_duration(1500, name="advance") == 1500 == ms_or_duration("1.5 seconds", name="advance")
