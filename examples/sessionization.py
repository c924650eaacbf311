"""Sessionization: one row per user session, closed after 30 s of event-time silence.

A session is a burst of a user's events with no gap longer than ``GAP_MS``.
The handler folds each user's events into the open session; an event-time
timeout at ``session end + GAP_MS`` closes it once the watermark (max event
time minus 10 s) passes that point, and the closed session is emitted once
(append mode).

Run it on the shipped sample data (no servers needed)::

    python examples/sessionization.py          # or: statefulstream demo

Environment (all optional): ``EVENTS`` (file, directory or glob of JSON
lines; default ``examples/data/events.jsonl``), ``CHECKPOINT_DIR`` (durable
state; default in memory), ``TRIGGER`` (default ``available_now``, or
``5 seconds`` when reading Kafka).

Deployed (``docker-compose.yml``): ``KAFKA_BOOTSTRAP`` + ``EVENTS_TOPIC``
read the clicks from Kafka (see ``env_config.py``); ``CASSANDRA_HOSTS``
(comma-separated; ``CASSANDRA_PORT``, default 9042; ``CASSANDRA_KEYSPACE``,
default ``demo``) writes closed
sessions to Scylla/Cassandra table ``sessions`` and mirrors the open ones
(the operator's state) into ``open_sessions`` for dashboards, creating both
tables if needed; ``METRICS_ADDRESS`` serves ``/metrics``.

``SESSIONS_TOPIC`` writes closed sessions to that Kafka topic instead (keyed
by user, exactly once), and ``DEAD_LETTERS_TOPIC`` dead letters to another.

Scaled out (the compose default, docs/scaleout.md): ``SCALE_OUT=1`` runs the
app as one of several processes of its consumer group. Every output must then
be written in the partition's Kafka transaction, so ``SESSIONS_TOPIC`` is
required and the Cassandra sinks are not used
(``examples/sessions_to_cassandra.py`` copies the topic into Scylla); with
``DEAD_LETTERS_TOPIC`` dead letters join the same transaction (default: files
in each partition's checkpoint folder).
"""

from __future__ import annotations

import operator
import os
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

from env_config import ExampleEnv
from session_tables import cassandra_sinks

from statefulstream import App, GroupState, GroupStateTimeout
from statefulstream.errors import ConfigError
from statefulstream.logs import configure_logging
from statefulstream.sink import Sink
from statefulstream.sinks import ConsoleSink
from statefulstream.sources.base import Source
from statefulstream.sources.file import FileSource

GAP_MS = 30_000
_BY_TS = operator.itemgetter("ts")
WATERMARK_DELAY = "10 seconds"
DATA = pathlib.Path(__file__).parent / "data" / "events.jsonl"


def _session(user: str, event: dict[str, Any]) -> dict[str, Any]:
    return {"user": user, "start": event["ts"], "end": event["ts"], "events": 0, "pages": [], "bought": False}


def _add(session: dict[str, Any], event: dict[str, Any]) -> None:
    session["start"] = min(session["start"], event["ts"])
    session["end"] = max(session["end"], event["ts"])
    session["events"] += 1
    if event.get("page") not in session["pages"]:
        session["pages"].append(event.get("page"))
    session["bought"] = session["bought"] or event.get("action") == "buy"


def _closed(session: dict[str, Any]) -> dict[str, Any]:
    return {**session, "duration_ms": session["end"] - session["start"]}


def sessionize(user: str, events: list[dict[str, Any]], state: GroupState[dict[str, Any]]) -> Iterator[dict]:
    """Fold a user's events into sessions; emit each session once when it closes."""
    if state.has_timed_out:  # no event for GAP_MS of event time: the session is over
        yield _closed(state.get())
        state.remove()
        return
    session = state.get_option()
    for event in sorted(events, key=_BY_TS):
        if session is not None and event["ts"] > session["end"] + GAP_MS:
            yield _closed(session)  # a gap inside this batch closes the earlier session
            session = None
        if session is None:
            session = _session(user, event)
        _add(session, event)
    assert session is not None  # a data call always has events
    if session["end"] + GAP_MS < state.get_current_watermark_ms():
        yield _closed(session)  # already behind the watermark: no later event can join it
        state.remove()
        return
    state.update(session)
    state.set_timeout_timestamp(session["end"] + GAP_MS)


def build_app(source: Source | None = None, sink: Sink | None = None, *, checkpoint_dir: str | None = None,
              trigger: str | None = "available_now", max_records_per_trigger: int | None = None,
              state_sink: Sink | None = None, metrics_address: str | None = None,
              dead_letters: Sink | None = None) -> App:
    """Build the sessionization app (defaults: the sample data and the console).

    Args:
        state_sink: receives the open sessions' state changes after each batch.
        metrics_address: serve ``/metrics``, ``/health`` and ``/ready`` there.
        dead_letters: where records that cannot be processed go (default: the checkpoint's files).
    """
    app = App("sessions", source=source or FileSource(os.environ.get("EVENTS", str(DATA))),
              checkpoint_dir=checkpoint_dir, trigger=trigger, max_records_per_trigger=max_records_per_trigger,
              metrics_address=metrics_address, dead_letters=dead_letters)
    app.flat_map_groups_with_state(
        key="user", event_time="ts", watermark_delay=WATERMARK_DELAY, output_mode="append",
        timeout=GroupStateTimeout.EVENT_TIME, sink=sink or ConsoleSink(), state_sink=state_sink,
    )(sessionize)
    return app


def kafka_sinks(environ: Mapping[str, str], bootstrap: str) -> tuple[Sink, Sink | None]:
    """``(sessions sink, dead-letter sink or None)``: ``SESSIONS_TOPIC`` and ``DEAD_LETTERS_TOPIC`` on Kafka."""
    from statefulstream.sinks.kafka import KafkaDeadLetterSink, KafkaSink  # the kafka extra

    dead = environ.get("DEAD_LETTERS_TOPIC", "").strip()
    return (KafkaSink(environ["SESSIONS_TOPIC"].strip(), bootstrap_servers=bootstrap, key="user"),
            KafkaDeadLetterSink(dead, bootstrap_servers=bootstrap) if dead else None)


def app_from_env(environ: Mapping[str, str]) -> App:
    """The app as the environment configures it (see the module docstring).

    Raises:
        ConfigError: ``SCALE_OUT=1`` without ``SESSIONS_TOPIC`` or with ``CASSANDRA_HOSTS``;
            ``SESSIONS_TOPIC`` without ``KAFKA_BOOTSTRAP``.
    """
    env = ExampleEnv.from_environ(environ)
    trigger = env.trigger or ("5 seconds" if env.kafka_bootstrap else "available_now")
    # Scaled out, the message key (the user) is the group key: each user's state stays in its partition.
    source = env.kafka_source("sessions", key_field="user" if env.scale_out else None)
    to_kafka = bool(environ.get("SESSIONS_TOPIC", "").strip())
    if env.scale_out and (not to_kafka or environ.get("CASSANDRA_HOSTS", "").strip()):
        msg = ("SCALE_OUT=1 writes sessions in each partition's Kafka transaction: set SESSIONS_TOPIC to a Kafka "
               "topic and unset CASSANDRA_HOSTS (examples/sessions_to_cassandra.py copies the topic to Cassandra)")
        raise ConfigError(msg)
    if to_kafka:
        if not env.kafka_bootstrap:
            raise ConfigError("SESSIONS_TOPIC is a Kafka topic: set KAFKA_BOOTSTRAP (and EVENTS_TOPIC) too")
        sessions, dead = kafka_sinks(environ, env.kafka_bootstrap)
        return build_app(source, sessions, checkpoint_dir=env.checkpoint_dir, trigger=trigger,
                         metrics_address=env.metrics_address, dead_letters=dead)
    sinks = cassandra_sinks(environ)
    return build_app(source, sinks[0] if sinks else None,
                     checkpoint_dir=env.checkpoint_dir, trigger=trigger,
                     state_sink=sinks[1] if sinks else None, metrics_address=env.metrics_address)


app = app_from_env(os.environ)

if __name__ == "__main__":
    configure_logging(os.environ.get("LOG_LEVEL") or "INFO")  # one line per batch at INFO
    app.run()
