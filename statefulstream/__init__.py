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
    RecordError,
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
from statefulstream.observe.progress import BatchProgress
from statefulstream.options import GroupStateTimeout, OutputMode
from statefulstream.records import DeadLetter, GroupValues, StateChange
from statefulstream.retry import RetryPolicy
from statefulstream.schema import Schema
from statefulstream.sink import Sink
from statefulstream.sources.base import Source
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
    "GroupValues",
    "IncompatibleStateError",
    "InvalidStateValueError",
    "InvalidTimeoutError",
    "OutputMode",
    "RecordError",
    "RetryPolicy",
    "Schema",
    "Sink",
    "SinkError",
    "SinkRejectedError",
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

import os as _os  # noqa: E402 - below the public imports on purpose

# The connectors (``statefulstream.sinks``) install from the repository's top-level ``sinks/`` folder
# (pyproject's package-dir). Imported from a source checkout, that folder is not inside this package:
# let the subpackage be found there too.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(__path__[0], "sinks")) and _os.path.isfile(
        _os.path.join(_checkout, "sinks", "__init__.py")):
    __path__.append(_checkout)
