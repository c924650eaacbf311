"""Generate the sample recording for the alerting example.

Writes ``examples/data/device_events.jsonl``: ``SECONDS`` seconds of readings
from ``DEVICES`` devices, ``SAMPLE_RECORDS_PER_SECOND`` lines per second (the
example replays one second per batch), each
``{"device": "dev-07", "ts": <epoch ms>, "status": "ok", "latency_ms": 41}``.

The recording is scripted so the example has something to say:

* ``SILENCES``: a device sends nothing for a while. Longer than the example's
  10-second silence, it pages and resolves when the device is back; the short
  one pages no one; the last one lasts to the end of the recording.
* ``BURSTS``: a device's error rate jumps to ``BURST_ERROR_RATE`` (baseline
  ``BASE_ERROR_RATE``); ``dev-07`` has two bursts, so its error-rate incident
  opens, resolves, and opens again; the short one stays below the threshold.
* ``MALFORMED``: two unusable lines that go to the dead letters.

The output is a pure function of the seed: ``python
examples/generate_device_events.py`` reproduces the committed file byte for
byte (a test checks it).
"""

from __future__ import annotations

import json
import random

from alerting import DATA, SAMPLE_RECORDS_PER_SECOND, SAMPLE_START_MS
from sample_files import generator_main

SEED = 20240502
SECONDS = 240
DEVICES = [f"dev-{n:02d}" for n in range(1, 13)]
BASE_ERROR_RATE = 0.03
BURST_ERROR_RATE = 0.8

SILENCES: dict[str, list[tuple[int, int]]] = {
    "dev-02": [(40, 70)],
    "dev-05": [(100, 106)],  # shorter than the example's silence: no page
    "dev-09": [(150, 200)],
    "dev-11": [(215, SECONDS)],  # still silent when the recording ends
}
"""Per device, ``[start, end)`` seconds without any event."""

BURSTS: dict[str, list[tuple[int, int]]] = {
    "dev-04": [(30, 60)],
    "dev-07": [(120, 140), (180, 200)],
    "dev-10": [(90, 94)],  # too short to reach the threshold
}
"""Per device, ``[start, end)`` seconds with ``BURST_ERROR_RATE`` errors."""

MALFORMED = {
    17: "reading lost in transit: not JSON",
    133: '{"ts": 1714557733500, "status": "ok", "latency_ms": 12}',  # no device: cannot be grouped
}
"""Second -> an unusable line recorded in that second."""


def _within(spans: list[tuple[int, int]], second: int) -> bool:
    return any(start <= second < end for start, end in spans)


def generate(seed: int = SEED) -> list[str]:
    """Return the lines of the recording, ``SAMPLE_RECORDS_PER_SECOND`` per second, in time order."""
    rng = random.Random(seed)
    lines: list[str] = []
    for second in range(SECONDS):
        active = [d for d in DEVICES if not _within(SILENCES.get(d, []), second)]
        bad = MALFORMED.get(second)
        count = SAMPLE_RECORDS_PER_SECOND - (bad is not None)
        offsets = sorted(rng.randrange(1000) for _ in range(count))
        second_lines = []
        for offset in offsets:
            device = rng.choice(active)
            rate = BURST_ERROR_RATE if _within(BURSTS.get(device, []), second) else BASE_ERROR_RATE
            error = rng.random() < rate
            latency = rng.randint(200, 2000) if error else rng.randint(5, 80)
            event = {"device": device, "ts": SAMPLE_START_MS + second * 1000 + offset,
                     "status": "error" if error else "ok", "latency_ms": latency}
            second_lines.append(json.dumps(event))
        if bad is not None:
            second_lines.insert(rng.randint(0, count), bad)
        lines += second_lines
    return lines


def main() -> None:
    """Write the sample file (``--out`` to write it elsewhere)."""
    generator_main(__doc__.split("\n\n")[0], generate, default_out=DATA, default_seed=SEED)


if __name__ == "__main__":
    main()
