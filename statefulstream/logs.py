"""The log set-up of ``statefulstream run`` and the examples: timestamped lines on stderr.

At ``INFO`` an app logs one line per committed batch on the logger
``statefulstream.batches`` (batch id, records, output rows, watermark,
duration); set that logger to ``WARNING`` to silence it, or to ``DEBUG`` on
``statefulstream.observe.progress`` for the full JSON report of each batch.
"""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def configure_logging(level: str | int = "INFO") -> None:
    """Send log lines at ``level`` and above to stderr (a no-op if logging is already configured).

    Raises:
        ValueError: ``level`` is not one of ``LEVELS`` or a ``logging`` level number.
    """
    if isinstance(level, str):
        if level.upper() not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}; got {level!r}")
        level = getattr(logging, level.upper())
    logging.basicConfig(level=level, stream=sys.stderr, format=LOG_FORMAT)
