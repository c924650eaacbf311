"""Stateful processors: several named state variables per key, TTL, any number of timers.

Spark 4's ``transformWithState`` / Flink's ``KeyedProcessFunction`` beside the
``GroupState`` function API; see docs/processors.md.
"""

from statefulstream.processor.api import ExpiredTimerInfo, StatefulProcessor, TimeMode, TimerValues
from statefulstream.processor.handle import StatefulProcessorHandle
from statefulstream.processor.variables import ListState, MapState, ValueState

__all__ = ["ExpiredTimerInfo", "ListState", "MapState", "StatefulProcessor", "StatefulProcessorHandle", "TimeMode",
           "TimerValues", "ValueState"]
