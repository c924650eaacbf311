"""What the examples read from the environment to run against real services (docker-compose).

Without any of these variables an example runs on its embedded sample file.

==========================  ==================================================
``KAFKA_BOOTSTRAP``         ``host:port[,host:port]``: read Kafka instead of the sample
``EVENTS_TOPIC``            the topic to read (required with ``KAFKA_BOOTSTRAP``)
``KAFKA_GROUP_ID``          group that offsets are committed to for lag tools (default: the app name)
``KAFKA_WATERMARK_PROBE``   ``1`` for brokers that under-report the high watermark (tansu)
``SCALE_OUT``               ``1``: run as one of several processes of the group (``KafkaSource(scale_out=True)``,
                            docs/scaleout.md); every process gets its own ``CHECKPOINT_DIR``
``METRICS_ADDRESS``         serve ``/metrics``, ``/health``, ``/ready`` there (``0.0.0.0:9108``)
``CHECKPOINT_DIR``          durable state and offsets (default: in memory)
``TRIGGER``                 ``available_now``, ``once`` or an interval (``"5 seconds"``)
``LOG_LEVEL``               ``INFO`` (default: one line per batch), ``DEBUG``, ``WARNING`` or ``ERROR``
==========================  ==================================================

>>> env = ExampleEnv.from_environ({"KAFKA_BOOTSTRAP": "kafka:9092", "EVENTS_TOPIC": "clicks"})
>>> env.kafka_source("sessions")
KafkaSource(topics=['clicks'], bootstrap_servers='kafka:9092')
>>> ExampleEnv.from_environ({}).kafka_source("sessions") is None
True
>>> env = ExampleEnv.from_environ({"KAFKA_BOOTSTRAP": "kafka:9092", "EVENTS_TOPIC": "clicks", "SCALE_OUT": "1"})
>>> env.kafka_source("sessions").scale_out
ScaleOut(changelog_topic=None, repartition_topic=None, restore_chunk=100000)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from statefulstream.errors import ConfigError
from statefulstream.sources.base import Source


@dataclasses.dataclass(frozen=True)
class ExampleEnv:
    """The deployment settings of an example, read once from the environment."""

    kafka_bootstrap: str | None = None
    events_topic: str | None = None
    kafka_group_id: str | None = None
    kafka_watermark_probe: bool = False
    scale_out: bool = False
    metrics_address: str | None = None
    checkpoint_dir: str | None = None
    trigger: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ExampleEnv:
        """Read the variables of the module docstring (empty values count as unset).

        Raises:
            ConfigError: ``KAFKA_BOOTSTRAP`` is set without ``EVENTS_TOPIC``.
        """
        def get(name: str) -> str | None:
            return environ.get(name, "").strip() or None

        env = cls(kafka_bootstrap=get("KAFKA_BOOTSTRAP"), events_topic=get("EVENTS_TOPIC"),
                  kafka_group_id=get("KAFKA_GROUP_ID"), kafka_watermark_probe=get("KAFKA_WATERMARK_PROBE") == "1",
                  scale_out=get("SCALE_OUT") == "1",
                  metrics_address=get("METRICS_ADDRESS"), checkpoint_dir=get("CHECKPOINT_DIR"),
                  trigger=get("TRIGGER"))
        if env.kafka_bootstrap and not env.events_topic:
            msg = (f"KAFKA_BOOTSTRAP is set ({env.kafka_bootstrap!r}) but EVENTS_TOPIC is not: set EVENTS_TOPIC to "
                   f"the topic to read, or unset KAFKA_BOOTSTRAP to run on the sample file")
            raise ConfigError(msg)
        if env.scale_out and not env.kafka_bootstrap:
            msg = "SCALE_OUT=1 spreads a Kafka topic's partitions over processes: set KAFKA_BOOTSTRAP and EVENTS_TOPIC"
            raise ConfigError(msg)
        return env

    def kafka_source(self, app_name: str, *, key_field: str | None = None) -> Source | None:
        """A ``KafkaSource`` of ``EVENTS_TOPIC`` when ``KAFKA_BOOTSTRAP`` is set, else ``None``.

        With ``SCALE_OUT=1`` it is a scale-out source: the group is the app's
        (``KAFKA_GROUP_ID`` or the app name), and its members share the partitions.
        ``key_field`` puts the message key into that field of each record: an
        app that groups by it keeps each key's state in the key's partition
        (otherwise a scale-out app re-keys records through a repartition topic).
        """
        if not self.kafka_bootstrap:
            return None
        from statefulstream.sources.kafka import KafkaSource  # the kafka extra is needed only here

        return KafkaSource(self.events_topic, bootstrap_servers=self.kafka_bootstrap,
                           group_id=self.kafka_group_id or app_name, watermark_probe=self.kafka_watermark_probe,
                           scale_out=self.scale_out, key_field=key_field)
