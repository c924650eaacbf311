"""Generate the sample click-stream for the sessionization example.

Writes ``examples/data/events.jsonl``: a few thousand events
``{"user": "u017", "ts": <epoch ms>, "page": "/home", "action": "view"}`` from a
few hundred users. Each user has bursts of activity (a session) separated by
idle gaps; most gaps are longer than the example's 30-second session timeout,
some are shorter so that two bursts merge into one session. Events are in
arrival order: roughly by time, with some arriving up to 5 seconds late (less
than the example's 10-second watermark delay, so none is dropped as late).
A handful of malformed lines (truncated, not JSON, missing ``ts``, ...) show
dead letters.

The output is a pure function of the seed: ``python examples/generate_data.py``
reproduces the committed file byte for byte (a test checks it).
"""

from __future__ import annotations

import json
import pathlib
import random
from typing import Any

from sample_files import generator_main

SEED = 20240501
USERS = 300
START_MS = 1_714_557_600_000  # 2024-05-01T10:00:00Z
SESSION_GAP_MS = 30_000  # the example's event-time session timeout
MAX_DELAY_MS = 5_000  # how late an event may arrive; below the example's watermark delay
OUT = pathlib.Path(__file__).parent / "data" / "events.jsonl"

PAGES = ["/home", "/search", "/product/1", "/product/2", "/product/3", "/product/4", "/cart", "/checkout"]

MALFORMED = [
    '{"user": "u001", "ts": 1714557601000, "page": "/ho',  # truncated mid-line
    "this line is not JSON at all",
    '{"user": "u002", "page": "/home", "action": "view"}',  # missing "ts"
    '["u003", 1714557602000, "/home", "view"]',  # JSON, but not an object
    '{"user": "u004", "ts": "ten past ten", "page": "/home", "action": "view"}',  # ts is not a number
]


def _session(rng: random.Random, user: str, start: int) -> list[dict[str, Any]]:
    """Return one burst of events, each less than a session gap after the previous."""
    events = []
    ts = start
    for _ in range(rng.randint(2, 12)):
        page = rng.choice(PAGES)
        action = "buy" if page == "/checkout" and rng.random() < 0.5 else rng.choice(["view", "view", "click"])
        events.append({"user": user, "ts": ts, "page": page, "action": action})
        ts += rng.randint(500, 20_000)
    return events


def generate(seed: int = SEED) -> list[str]:
    """Return the lines of the sample file, in arrival order."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for n in range(1, USERS + 1):
        user = f"u{n:03d}"
        start = START_MS + rng.randint(0, 40 * 60_000)
        for _ in range(rng.randint(1, 4)):
            burst = _session(rng, user, start)
            events += burst
            last = burst[-1]["ts"]
            # Mostly a real break; one in six bursts resumes within the session gap.
            idle = rng.randint(5_000, SESSION_GAP_MS - 5_000) if rng.random() < 1 / 6 else \
                rng.randint(SESSION_GAP_MS + 15_000, 15 * 60_000)
            start = last + idle
    # Arrival order: event time plus a small delay for one event in twenty.
    arrival = [(e["ts"] + (rng.randint(1, MAX_DELAY_MS) if rng.random() < 0.05 else 0), i)
               for i, e in enumerate(events)]
    lines = [json.dumps(events[i]) for _, i in sorted(arrival)]
    for bad in MALFORMED:
        lines.insert(rng.randint(1, len(lines) - 1), bad)
    return lines


def main() -> None:
    """Write the sample file (``--out`` to write it elsewhere)."""
    generator_main(__doc__.split("\n\n")[0], generate, default_out=OUT, default_seed=SEED)


if __name__ == "__main__":
    main()
