"""Copy the sessions a scaled-out sessionization app wrote to Kafka into the Scylla/Cassandra table ``sessions``.

A scaled-out app (``SCALE_OUT=1``, docs/scaleout.md) writes only to Kafka,
inside each partition's transaction. This one-process app reads that topic
(``read_committed``) and upserts each session into ``sessions`` (primary key
``user, start``): a replayed batch rewrites the same rows, so the table holds
each session once. The open-sessions mirror (``open_sessions``) is not kept in
scale-out mode: state sinks are not supported there.

Environment (docker-compose.yml, service ``sessions-to-scylla``):
``KAFKA_BOOTSTRAP`` and ``EVENTS_TOPIC`` (the sessions topic), ``CASSANDRA_HOSTS``
(``CASSANDRA_PORT``, ``CASSANDRA_KEYSPACE``), ``CHECKPOINT_DIR``, ``TRIGGER``,
``METRICS_ADDRESS``, ``LOG_LEVEL``, as in ``env_config.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from env_config import ExampleEnv
from session_tables import cassandra_sinks

from statefulstream import App, GroupState
from statefulstream.errors import ConfigError
from statefulstream.logs import configure_logging
from statefulstream.sink import Sink
from statefulstream.sources.base import Source


def copy_sessions(user: str, sessions: list[dict[str, Any]], state: GroupState[None]) -> Iterator[dict[str, Any]]:
    """Pass a user's sessions through unchanged (no state is kept)."""
    yield from sessions


def build_app(source: Source, sink: Sink, *, checkpoint_dir: str | None = None, trigger: str | None = "5 seconds",
              metrics_address: str | None = None) -> App:
    """The copy: ``source`` (the sessions topic) to ``sink`` (the sessions table), grouped by user."""
    app = App("sessions-to-cassandra", source=source, checkpoint_dir=checkpoint_dir, trigger=trigger,
              metrics_address=metrics_address)
    app.flat_map_groups_with_state(key="user", output_mode="append", sink=sink)(copy_sessions)
    return app


def app_from_env(environ: Mapping[str, str]) -> App:
    """The app as the environment configures it (see the module docstring).

    Raises:
        ConfigError: ``KAFKA_BOOTSTRAP``/``EVENTS_TOPIC`` or ``CASSANDRA_HOSTS`` are missing.
    """
    env = ExampleEnv.from_environ(environ)
    source = env.kafka_source("sessions-to-cassandra")
    sinks = cassandra_sinks(environ)
    if source is None or sinks is None:
        msg = ("sessions_to_cassandra.py copies a Kafka topic into Cassandra: set KAFKA_BOOTSTRAP, EVENTS_TOPIC "
               "(the sessions topic) and CASSANDRA_HOSTS")
        raise ConfigError(msg)
    return build_app(source, sinks[0], checkpoint_dir=env.checkpoint_dir, trigger=env.trigger or "5 seconds",
                     metrics_address=env.metrics_address)


if __name__ == "__main__":
    configure_logging(os.environ.get("LOG_LEVEL") or "INFO")
    app_from_env(os.environ).run()
