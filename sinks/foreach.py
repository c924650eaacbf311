"""``ForeachSink`` (a callable per row) and ``foreach_batch`` (a callable per batch)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from statefulstream.errors import ConfigError, SinkError
from statefulstream.sink import Sink


def _check_callable(fn: Any, what: str) -> None:
    if not callable(fn):
        msg = f"{what} needs a callable; got {type(fn).__name__} {fn!r}"
        raise ConfigError(msg)


def _name_of(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


class ForeachSink(Sink):
    """Calls ``fn(row)`` for each row of each batch, in order.

    Idempotency is the callable's job: a replayed batch calls it again with
    the same rows, so it should upsert by a key of the row (or ignore rows it
    has seen). Raise ``SinkUnavailableError`` from ``fn`` to have the runtime
    hold the batch and retry; any other exception is wrapped in ``SinkError``
    (naming the batch and row) and stops the app, and the batch is replayed on
    restart, from its first row.

    >>> seen = []
    >>> ForeachSink(seen.append).write(0, ["a", "b"])
    >>> seen
    ['a', 'b']

    Args:
        fn: called with one row at a time.

    Raises:
        ConfigError: ``fn`` is not callable.
    """

    name = "foreach"

    def __init__(self, fn: Callable[[Any], object]) -> None:
        _check_callable(fn, "ForeachSink")
        self.fn = fn

    def __repr__(self) -> str:
        return f"ForeachSink({_name_of(self.fn)})"

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        """Call ``fn`` for every row of ``batch_id``."""
        fn = self.fn
        for index, row in enumerate(rows):
            try:
                fn(row)
            except SinkError:
                raise
            except Exception as exc:
                msg = (f"foreach sink: {_name_of(fn)} raised {type(exc).__name__} on batch {batch_id} "
                       f"row {index}: {exc}; the batch will be replayed from its first row")
                raise SinkError(msg) from exc


class ForeachBatchSink(Sink):
    """Calls ``fn(batch_id, rows)`` once per batch; build it with :func:`foreach_batch`."""

    name = "foreach_batch"

    def __init__(self, fn: Callable[[int, list[Any]], object]) -> None:
        _check_callable(fn, "foreach_batch")
        self.fn = fn

    def __repr__(self) -> str:
        return f"foreach_batch({_name_of(self.fn)})"

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        """Call ``fn(batch_id, rows)``."""
        try:
            self.fn(batch_id, list(rows))
        except SinkError:
            raise
        except Exception as exc:
            msg = (f"foreach_batch sink: {_name_of(self.fn)} raised {type(exc).__name__} on batch {batch_id}: "
                   f"{exc}; the batch will be replayed with the same batch id")
            raise SinkError(msg) from exc


def foreach_batch(fn: Callable[[int, list[Any]], object]) -> ForeachBatchSink:
    """Return a sink that calls ``fn(batch_id, rows)`` once per batch, like Spark's ``foreachBatch``.

    The batch id is what makes ``fn`` idempotent: a replayed batch arrives
    again with the same id and the same rows, so ``fn`` can overwrite what it
    wrote for that id (a file or partition named by it, a transaction keyed by
    it). Exceptions are handled as in :class:`ForeachSink`.

    >>> batches = {}
    >>> sink = foreach_batch(lambda batch_id, rows: batches.__setitem__(batch_id, rows))
    >>> sink.write(4, [1, 2]); sink.write(4, [1, 2])
    >>> batches
    {4: [1, 2]}

    Raises:
        ConfigError: ``fn`` is not callable.
    """
    return ForeachBatchSink(fn)
