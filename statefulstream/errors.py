"""Every exception statefulstream raises, in one module users can catch from.

The tree, grouped by what the caller can do::

    StatefulStreamError
    ├─ ConfigError (also ValueError)         wrong argument; raised at definition time
    ├─ GroupStateError                       misuse of GroupState inside a handler
    │   ├─ StateNotFoundError (also LookupError)
    │   ├─ InvalidStateValueError (also ValueError)
    │   ├─ TimeoutNotConfiguredError
    │   ├─ InvalidTimeoutError (also ValueError)
    │   └─ WatermarkNotDefinedError
    ├─ ProcessorHandleError                  misuse of a stateful processor's handle or state variables
    ├─ UserFunctionError                     the handler raised; key and batch_id attached
    ├─ RecordError (also ValueError)         a batch query got records it cannot handle
    ├─ StateError                            the state store cannot be used
    │   ├─ StateCorruptedError
    │   └─ IncompatibleStateError
    ├─ CheckpointError                       the checkpoint cannot be used
    │   └─ CheckpointCorruptedError
    ├─ SourceError                           a source cannot be read
    │   └─ DataLossError                     data already read or planned is gone (fail_on_data_loss)
    └─ SinkError                             a sink cannot be written
        ├─ SinkUnavailableError              retriable; carries retry_after
        └─ SinkRejectedError                 permanent; the rows are dead-lettered

Retriable and fatal conditions are different classes, so a caller can decide
without parsing messages.
"""

from __future__ import annotations

from typing import Any


class StatefulStreamError(Exception):
    """Base class of every error raised by statefulstream."""


class ConfigError(StatefulStreamError, ValueError):
    """An argument or option is wrong.

    Raised when an app, operator, source or sink is defined, before any data
    flows. Operator action: fix the argument named in the message.
    """


# --- GroupState misuse: raised inside a handler, mirrors Spark's GroupState errors.


class GroupStateError(StatefulStreamError):
    """A GroupState method was called in a way its contract forbids."""


class StateNotFoundError(GroupStateError, LookupError):
    """``GroupState.get()`` was called while the group has no state.

    Use ``get_option()`` or check ``exists`` first.
    """


class InvalidStateValueError(GroupStateError, ValueError):
    """``GroupState.update()`` was given ``None``; call ``remove()`` instead."""


class TimeoutNotConfiguredError(GroupStateError, RuntimeError):
    """An operation needs a timeout kind the operator does not have (Spark's UnsupportedOperationException).

    ``set_timeout_duration`` needs ``GroupStateTimeout.PROCESSING_TIME``,
    ``set_timeout_timestamp`` needs ``GroupStateTimeout.EVENT_TIME``, and a
    ``GroupState`` built with ``has_timed_out=True`` needs a timeout kind.
    """


class InvalidTimeoutError(GroupStateError, ValueError):
    """A timeout is not positive, or an event-time timeout is below the watermark."""


class WatermarkNotDefinedError(GroupStateError, RuntimeError):
    """``get_current_watermark_ms()`` was called on an operator without a watermark.

    Give the operator ``watermark_delay=`` (and ``event_time=``).
    """


# --- Runtime errors.


class ProcessorHandleError(StatefulStreamError):
    """A stateful processor used its handle or a state variable where the contract forbids it.

    For example a timer registered in ``init``, a variable declared outside
    ``init`` or read without a current key, a name declared twice as
    different kinds, or ``update(None)``. Operator action: fix the processor
    as the message says (docs/processors.md lists what each method may call).
    """


class UserFunctionError(StatefulStreamError):
    """The user's handler raised; the batch is not committed.

    Attributes:
        key: the group key the handler was called for.
        batch_id: the micro-batch being processed.

    The handler's exception is the ``__cause__``. The batch's state changes
    are discarded, so a restart replays the batch on the previous state.
    Operator action: fix the handler (the traceback points into it) and
    restart; nothing is lost.
    """

    def __init__(self, message: str, *, key: Any, batch_id: int) -> None:
        super().__init__(message)
        self.key = key
        self.batch_id = batch_id


class RecordError(StatefulStreamError, ValueError):
    """``App.run_batch`` got records a step or the key could not handle.

    Attributes:
        dead_letters: every such record, with the reason (``DeadLetter``).

    Operator action: fix the records or the step, or pass ``dead_letters=[]``
    to collect them instead of failing (a streaming app dead-letters them).
    """

    def __init__(self, message: str, *, dead_letters: list[Any]) -> None:
        super().__init__(message)
        self.dead_letters = dead_letters


class StateError(StatefulStreamError):
    """The state store cannot be opened, read or written."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class StateCorruptedError(StateError):
    """Stored state cannot be decoded. Restore the checkpoint directory from a snapshot."""


class IncompatibleStateError(StateError):
    """The checkpoint was written by an app with another operator signature or format.

    Operator action: start the changed app with a new ``checkpoint_dir``, or
    revert the change that altered key, timeout kind or output mode.
    """


class CheckpointError(StatefulStreamError):
    """The checkpoint (offsets log, commit records) cannot be used."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class CheckpointCorruptedError(CheckpointError):
    """A checkpoint file is truncated or unreadable; the app refuses to start.

    The app never silently starts from scratch. Operator action: restore the
    directory from a snapshot (``statefulstream checkpoint snapshot``), or move
    it away to start fresh deliberately.
    """


class SourceError(StatefulStreamError):
    """A source cannot be read (missing topic, unreadable directory, ...)."""


class DataLossError(SourceError):
    """Source data that was read or planned is gone: a file shrank or vanished, a topic lost records.

    Raised with ``fail_on_data_loss=True`` (the default, as Spark's
    ``failOnDataLoss``); the message names the partition, the position
    expected, what is there now and what to do.
    """


class SinkError(StatefulStreamError):
    """A sink cannot be written."""


class SinkUnavailableError(SinkError):
    """A sink is down or overloaded; the write may succeed later.

    Attributes:
        retry_after: seconds the sink asked to wait, or ``None``.

    The executor holds the batch (nothing is committed, the source is not read
    further) and retries with backoff until the app's sink retry limit.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SinkRejectedError(SinkError):
    """A sink refused rows for good (for example HTTP 400); retrying cannot help."""
