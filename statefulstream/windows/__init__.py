"""Event-time windowed aggregations: window specs and aggregate functions.

>>> from statefulstream import App
>>> from statefulstream.windows import tumbling, count, avg, approx_count_distinct
>>> app = App("per_minute")
>>> _ = app.aggregate(key="service", event_time="ts", window=tumbling("1 minute"), watermark_delay="10 minutes",
...                   aggs={"errors": count(), "avg_latency": avg("latency_ms"),
...                         "users": approx_count_distinct("user")})

See docs/windows.md for output modes, watermarks and what each costs.
"""

from statefulstream.windows.aggregators import (
    Aggregator,
    aggregator,
    approx_count_distinct,
    avg,
    collect_list,
    collect_set,
    count,
    first,
    last,
    max,
    mean,
    min,
    stddev,
    stddev_pop,
    sum,
    var_pop,
    variance,
)
from statefulstream.windows.specs import SessionSpec, WindowSpec, session, sliding, tumbling

__all__ = [
    "Aggregator",
    "SessionSpec",
    "WindowSpec",
    "aggregator",
    "approx_count_distinct",
    "avg",
    "collect_list",
    "collect_set",
    "count",
    "first",
    "last",
    "max",
    "mean",
    "min",
    "session",
    "sliding",
    "stddev",
    "stddev_pop",
    "sum",
    "tumbling",
    "var_pop",
    "variance",
]
