"""The executor: runs an app's micro-batches (``batch``), as its trigger says (``trigger_loop``).

Its parts: ``startup`` (open and recover), ``keyed_calls`` (the handler per
key and per timeout), ``sink_writer`` (sink I/O with backpressure).
"""

from statefulstream.executor.batch import Executor
from statefulstream.executor.sink_writer import DEFAULT_SINK_RETRY

__all__ = ["DEFAULT_SINK_RETRY", "Executor"]
