"""Load generator for the examples: click events (sessionization) or device readings (alerting) to Kafka.

Event time runs at the chosen rate from ``--start-ms`` (default: now): event
``i`` happens at ``start + i / rate`` seconds. With pacing (the default) the
events are sent at that rate, so event time follows the wall clock; with
``--no-pace`` they are sent as fast as the broker takes them, with the same
timestamps. The events are a pure function of the options and ``--seed``.

* ``clicks``: ``{"user", "ts", "page", "action"}``. Users come and go (each
  active for a while, then idle), so their sessions close; ``--late-fraction``
  of the events carry a timestamp up to ``--lateness`` in the past.
* ``devices``: ``{"device", "ts", "status", "latency_ms"}``. Each device has
  an error burst of ``--burst-length`` every ``--burst-every`` (at its own
  phase), and goes silent for ``--silence-length`` every ``--silence-every``.

Examples::

    python examples/produce_events.py clicks --bootstrap localhost:9092 --topic clicks --rate 200
    python examples/produce_events.py devices --bootstrap localhost:9092 --topic device-events \\
        --keys 50 --burst-every "5 minutes" --burst-length "40 seconds" --silence-every "7 minutes"

Records are keyed by user or device, so each key's events stay in order in one partition.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import logging
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from statefulstream.durations import parse_duration_ms

logger = logging.getLogger("produce_events")

PAGES = ["/home", "/search", "/product/1", "/product/2", "/product/3", "/cart", "/checkout"]
BURST_ERROR_RATE = 0.8
BASE_ERROR_RATE = 0.02
ACTIVE_MS = (20_000, 120_000)  # how long a user stays active, in event time
IDLE_MS = (40_000, 300_000)  # how long an idle user stays away: longer than the 30-second session gap


def click_events(*, keys: int, rate: float, start_ms: int, seed: int, lateness_ms: int = 0,
                 late_fraction: float = 0.0) -> Iterator[dict[str, Any]]:
    """Endless click events of ``keys`` users, each active for a while, then idle for a while.

    >>> next(click_events(keys=3, rate=10, start_ms=0, seed=1))["ts"]
    0
    """
    rng = random.Random(seed)
    users = [f"u{n:04d}" for n in range(keys)]
    active: list[str] = []
    # (instant the user toggles between idle and active, user); everyone starts idle for a while.
    toggles = [(start_ms + rng.randint(0, IDLE_MS[0]), u) for u in users]
    heapq.heapify(toggles)
    for i in itertools.count():
        now = start_ms + int(i * 1000 / rate)
        while toggles[0][0] <= now:
            at, user = heapq.heappop(toggles)
            if user in active:
                active.remove(user)
                heapq.heappush(toggles, (at + rng.randint(*IDLE_MS), user))
            else:
                active.append(user)
                heapq.heappush(toggles, (at + rng.randint(*ACTIVE_MS), user))
        present = active or users  # nobody active yet: anyone may click
        ts = now - rng.randint(1, lateness_ms) if lateness_ms and rng.random() < late_fraction else now
        page = rng.choice(PAGES)
        action = "buy" if page == "/checkout" and rng.random() < 0.5 else rng.choice(["view", "view", "click"])
        yield {"user": rng.choice(present), "ts": ts, "page": page, "action": action}


def _in_window(now_ms: int, phase_ms: int, every_ms: int, length_ms: int) -> bool:
    return every_ms > 0 and (now_ms + phase_ms) % every_ms < length_ms


def device_events(*, keys: int, rate: float, start_ms: int, seed: int, burst_every_ms: int = 0,
                  burst_length_ms: int = 0, silence_every_ms: int = 0,
                  silence_length_ms: int = 0) -> Iterator[dict[str, Any]]:
    """Endless readings of ``keys`` devices with periodic error bursts and silences.

    >>> sorted(next(device_events(keys=2, rate=10, start_ms=0, seed=1)))
    ['device', 'latency_ms', 'status', 'ts']
    """
    rng = random.Random(seed)
    devices = [f"dev-{n:03d}" for n in range(keys)]
    span = max(burst_every_ms, silence_every_ms, 1)
    phase = {d: rng.randrange(span) for d in devices}
    for i in itertools.count():
        now = start_ms + int(i * 1000 / rate)
        speaking = [d for d in devices if not _in_window(now, phase[d], silence_every_ms, silence_length_ms)]
        device = rng.choice(speaking or devices)
        bursting = _in_window(now, phase[device], burst_every_ms, burst_length_ms)
        error = rng.random() < (BURST_ERROR_RATE if bursting else BASE_ERROR_RATE)
        yield {"device": device, "ts": now, "status": "error" if error else "ok",
               "latency_ms": rng.randint(200, 2000) if error else rng.randint(5, 80)}


def produce(events: Iterable[dict[str, Any]], *, bootstrap: str, topic: str, key_field: str,
            rate: float | None = None, config: dict[str, Any] | None = None) -> int:
    """Send ``events`` as JSON to ``topic`` keyed by ``key_field``; return how many were delivered.

    Args:
        rate: send at most this many events per second; ``None`` sends as fast as possible.
        config: extra librdkafka producer settings.

    Raises:
        RuntimeError: some events were not delivered within 30 s of the last send.
    """
    from confluent_kafka import Producer  # the kafka extra is needed only here

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True,
                         **(config or {})})
    failed: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    began, sent = time.monotonic(), 0
    for event in events:
        producer.produce(topic, json.dumps(event).encode(), key=str(event[key_field]).encode(),
                         on_delivery=on_delivery)
        sent += 1
        producer.poll(0)
        if rate:
            ahead = sent / rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
        if sent % 10_000 == 0:
            logger.info("%d events sent to %r", sent, topic)
    left = producer.flush(30)
    if left or failed:
        msg = (f"{left + len(failed)} of {sent} events were not delivered to {topic!r} on {bootstrap}: "
               f"{failed[:3]}; check that the broker is up and the topic exists")
        raise RuntimeError(msg)
    return sent


def _duration_ms(text: str) -> int:
    return 0 if text.strip() == "0" else parse_duration_ms(text, name="duration")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see ``--help``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["clicks", "devices"], help="which example's events")
    parser.add_argument("--bootstrap", default="localhost:9092", help="Kafka bootstrap servers")
    parser.add_argument("--topic", required=True, help="topic to write to")
    parser.add_argument("--rate", type=float, default=100.0, help="events per second of event time (default 100)")
    parser.add_argument("--count", type=int, default=0, help="events to send; 0 = until interrupted")
    parser.add_argument("--keys", type=int, default=200, help="number of users or devices (default 200)")
    parser.add_argument("--start-ms", type=int, default=None, help="event time of the first event (default: now)")
    parser.add_argument("--no-pace", action="store_true", help="send as fast as possible (timestamps unchanged)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--lateness", type=_duration_ms, default=0, help="clicks: how late a late event is, at most")
    parser.add_argument("--late-fraction", type=float, default=0.0, help="clicks: share of late events (0..1)")
    for what, every, length in (("burst", "0", "30 seconds"), ("silence", "0", "30 seconds")):
        parser.add_argument(f"--{what}-every", type=_duration_ms, default=_duration_ms(every),
                            help=f"devices: period of each device's {what} (0 = none)")
        parser.add_argument(f"--{what}-length", type=_duration_ms, default=_duration_ms(length),
                            help=f"devices: how long each {what} lasts")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.keys <= 0 or args.count < 0 or not 0 <= args.late_fraction <= 1:
        parser.error("--rate and --keys must be positive, --count >= 0, --late-fraction within 0..1")
    return args


def events_for(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """The events the options describe (``--count`` of them, or endless)."""
    start_ms = args.start_ms if args.start_ms is not None else time.time_ns() // 1_000_000
    if args.kind == "clicks":
        events = click_events(keys=args.keys, rate=args.rate, start_ms=start_ms, seed=args.seed,
                              lateness_ms=args.lateness, late_fraction=args.late_fraction)
    else:
        events = device_events(keys=args.keys, rate=args.rate, start_ms=start_ms, seed=args.seed,
                               burst_every_ms=args.burst_every, burst_length_ms=args.burst_length,
                               silence_every_ms=args.silence_every, silence_length_ms=args.silence_length)
    return itertools.islice(events, args.count) if args.count else events


def main(argv: Sequence[str] | None = None) -> int:
    """Produce the events the command line describes; return how many were sent."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    key_field = "user" if args.kind == "clicks" else "device"
    sent = produce(events_for(args), bootstrap=args.bootstrap, topic=args.topic, key_field=key_field,
                   rate=None if args.no_pace else args.rate)
    logger.info("sent %d %s events to %r", sent, args.kind, args.topic)
    return sent


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
