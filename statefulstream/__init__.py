"""statefulstream: arbitrary stateful stream processing in Python.

Spark's ``flatMapGroupsWithState`` contract (GroupState, processing- and
event-time timeouts, watermarks, output modes) as a native Python runtime
with durable RocksDB state and exactly-once checkpoints.
"""

from statefulstream.app import App
from statefulstream.errors import (
    CheckpointCorruptedError,
    CheckpointError,
    ConfigError,
    GroupStateError,
    IncompatibleStateError,
    InvalidStateValueError,
    InvalidTimeoutError,
    SinkError,
    SinkRejectedError,
    SinkUnavailableError,
    SourceError,
    StateCorruptedError,
    StateError,
    StatefulStreamError,
    StateNotFoundError,
    TimeoutNotConfiguredError,
    UserFunctionError,
    WatermarkNotDefinedError,
)
from statefulstream.executor import SinkRetry
from statefulstream.options import GroupStateTimeout, OutputMode
from statefulstream.progress import BatchProgress
from statefulstream.schema import Schema
from statefulstream.sink import Sink, StateChange
from statefulstream.sources.base import DeadLetter, Source
from statefulstream.state.codec import register_type
from statefulstream.state.group_state import GroupState
from statefulstream.triggers import Trigger

__version__ = "0.1.0"

__all__ = [
    "App",
    "BatchProgress",
    "CheckpointCorruptedError",
    "CheckpointError",
    "ConfigError",
    "DeadLetter",
    "GroupState",
    "GroupStateError",
    "GroupStateTimeout",
    "IncompatibleStateError",
    "InvalidStateValueError",
    "InvalidTimeoutError",
    "OutputMode",
    "Schema",
    "Sink",
    "SinkError",
    "SinkRejectedError",
    "SinkRetry",
    "SinkUnavailableError",
    "Source",
    "SourceError",
    "StateChange",
    "StateCorruptedError",
    "StateError",
    "StateNotFoundError",
    "StatefulStreamError",
    "TimeoutNotConfiguredError",
    "Trigger",
    "UserFunctionError",
    "WatermarkNotDefinedError",
    "register_type",
]
