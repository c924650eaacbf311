"""Webhook sinks: ``WebhookSink`` (a JSON POST per row) and ``PagerDutySink`` (Events API v2).

Needs the ``webhook`` extra (httpx for HTTP, tenacity for retry policies).

Delivery, per row and in row order (so a ``resolve`` never overtakes its
``trigger``)::

    2xx                          delivered
    408, 425, 429, 5xx,          retried with exponential backoff and jitter
    connection error, timeout    (429/503: after the server's Retry-After)
    other 4xx (400, 413, 422)    permanent: dead-lettered with the reason, the batch goes on
    3xx, 401, 403, 404, 405      misconfiguration: SinkError, the app stops (nothing is lost)

When retries are exhausted (or the server asks to wait longer than the
policy's ``max_retry_after``) the sink raises ``SinkUnavailableError``: the
runtime holds the batch (no commit, no further reads) and calls ``write``
again later; the sink resumes at the first row it has not delivered.

Idempotency: every request carries a key derived from the batch and the row,
so a replayed batch or a retried request is recognised by the receiver —
PagerDuty's ``dedup_key`` (from the app name, group key and alert id), and
an ``Idempotency-Key`` header for generic webhooks.

Secrets — the routing key, header values, the URL's path and query (webhook
URLs often embed a token) — never appear in this module's logs, in exception
messages or in reprs; the same redaction is applied to httpx's own request
log while a sink is open.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import hashlib
import logging
import math
import os
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import tenacity

from sinks._json import dumps
from statefulstream.durations import parse_duration_ms
from statefulstream.errors import ConfigError, SinkError, SinkUnavailableError
from statefulstream.sink import Sink, SinkContext
from statefulstream.sources.base import DeadLetter
from statefulstream.timeutil import ms_to_datetime, to_epoch_ms

logger = logging.getLogger(__name__)

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
"""The PagerDuty Events API v2 endpoint."""
DEFAULT_TIMEOUT = "10 seconds"
"""Per-request timeout (connect, read, write and pool each) unless a sink is given one."""

_RETRIABLE_STATUS = frozenset({408, 425, 429})
_MISCONFIGURED_STATUS = frozenset({401, 403, 404, 405, 407})
_MASK = "***"


def _positive_ms(value: int | str, name: str) -> int:
    ms = parse_duration_ms(value, name=name)
    if ms <= 0:
        msg = f"{name} must be positive; got {value!r}"
        raise ConfigError(msg)
    return ms


class RetryPolicy:
    """How a webhook sink retries one request before giving the batch back to the runtime.

    Waits grow exponentially from ``initial_backoff`` (doubling, capped at
    ``max_backoff``) with full jitter, so many sinks recovering at once do
    not retry in step. A ``Retry-After`` from the server replaces the backoff;
    one longer than ``max_retry_after`` ends the retries at once (the runtime
    holds the batch and ``SinkUnavailableError.retry_after`` carries the wait).
    Durations are strings (``"200 ms"``) or milliseconds.

    >>> RetryPolicy(max_attempts=3, initial_backoff="50 ms")
    RetryPolicy(max_attempts=3, initial_backoff_ms=50, max_backoff_ms=30000, max_retry_after_ms=300000)

    Raises:
        ConfigError: a value is not positive, or ``max_backoff < initial_backoff``.
    """

    __slots__ = ("initial_backoff_ms", "max_attempts", "max_backoff_ms", "max_retry_after_ms")

    def __init__(self, *, max_attempts: int = 5, initial_backoff: int | str = "200 ms",
                 max_backoff: int | str = "30 seconds", max_retry_after: int | str = "5 minutes") -> None:
        if not isinstance(max_attempts, int) or max_attempts < 1:
            msg = f"RetryPolicy max_attempts must be an int >= 1 (1 means no retry); got {max_attempts!r}"
            raise ConfigError(msg)
        self.max_attempts = max_attempts
        self.initial_backoff_ms = _positive_ms(initial_backoff, "RetryPolicy initial_backoff")
        self.max_backoff_ms = _positive_ms(max_backoff, "RetryPolicy max_backoff")
        self.max_retry_after_ms = _positive_ms(max_retry_after, "RetryPolicy max_retry_after")
        if self.max_backoff_ms < self.initial_backoff_ms:
            msg = (f"RetryPolicy max_backoff ({self.max_backoff_ms} ms) must not be below "
                   f"initial_backoff ({self.initial_backoff_ms} ms)")
            raise ConfigError(msg)

    def _key(self) -> tuple[int, int, int, int]:
        return self.max_attempts, self.initial_backoff_ms, self.max_backoff_ms, self.max_retry_after_ms

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RetryPolicy) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"RetryPolicy(max_attempts={self.max_attempts}, initial_backoff_ms={self.initial_backoff_ms}, "
                f"max_backoff_ms={self.max_backoff_ms}, max_retry_after_ms={self.max_retry_after_ms})")


DEFAULT_RETRY = RetryPolicy()
"""5 attempts, 200 ms doubling to at most 30 s, Retry-After honoured up to 5 minutes."""


class _RetriableError(Exception):
    """One attempt failed in a way a later attempt may not (its message is already redacted)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True)
class _Event:
    """One prepared request: the body, its headers, and the row as dead letters show it."""

    body: bytes
    headers: Mapping[str, str]
    raw: Any


class _Redactor:
    """Replaces secrets in text: the full URL by its display form, then each secret value by ``***``."""

    def __init__(self, url: str, display_url: str, secrets: Sequence[str]) -> None:
        pairs = [(url, display_url)] if url != display_url else []
        # Longest first, so a secret containing another is masked whole.
        pairs += [(s, _MASK) for s in sorted({s for s in secrets if s}, key=len, reverse=True)]
        self._pairs = pairs

    def __call__(self, text: str) -> str:
        for secret, mask in self._pairs:
            text = text.replace(secret, mask)
        return text


class _RedactingFilter(logging.Filter):
    """Redacts secrets from the records of httpx's logger (it logs each request's full URL)."""

    def __init__(self, redact: _Redactor) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = self._redact(text)
        if clean != text:
            record.msg, record.args = clean, None
        return True


class _StopOnLongRetryAfter(tenacity.stop.stop_base):
    """Stop retrying when the server asks to wait longer than the policy allows; the runtime waits instead."""

    def __init__(self, max_seconds: float) -> None:
        self._max_seconds = max_seconds

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        return (isinstance(exc, _RetriableError) and exc.retry_after is not None
                and exc.retry_after > self._max_seconds)


class _RateLimiter:
    """Spaces requests at least ``1 / per_second`` apart (retries included)."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second
        self._next = 0.0

    def acquire(self) -> None:
        now = time.monotonic()
        if self._next > now:
            time.sleep(self._next - now)
            now = self._next
        self._next = now + self._interval


def _retry_after_s(value: str | None) -> float | None:
    """Parse a Retry-After header: delay seconds (fractions accepted) or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        seconds = (when - dt.datetime.now(dt.timezone.utc)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _display_url(url: str) -> str:
    """Return ``scheme://host[:port]/…``: the path and query of a webhook URL may hold a token."""
    parsed = httpx.URL(url)
    origin = f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")
    return origin + ("/…" if parsed.raw_path not in (b"", b"/") else "")


def _hash(*parts: Any) -> str:
    return hashlib.sha256(dumps(parts)).hexdigest()


class _HttpEventSink(Sink):
    """Delivery shared by the webhook sinks: one request per row, retried, rate-limited, redacted."""

    def __init__(self, url: str, *, mask_path: bool, headers: Mapping[str, str] | None, secrets: Sequence[str],
                 timeout: int | str, retry: RetryPolicy, rate_limit_per_s: float | None) -> None:
        try:
            scheme = httpx.URL(url).scheme
        except (httpx.InvalidURL, TypeError) as exc:
            msg = f"{type(self).__name__} url is not a valid URL ({type(exc).__name__})"
            raise ConfigError(msg) from None
        display_url = _display_url(url) if mask_path else url
        if scheme not in ("http", "https"):
            msg = f"{type(self).__name__} url must start with http:// or https://; got {display_url!r}"
            raise ConfigError(msg)
        if rate_limit_per_s is not None and not rate_limit_per_s > 0:
            msg = f"{type(self).__name__} rate_limit_per_s must be positive or None; got {rate_limit_per_s!r}"
            raise ConfigError(msg)
        if not isinstance(retry, RetryPolicy):
            msg = f"{type(self).__name__} retry must be a RetryPolicy; got {type(retry).__name__}"
            raise ConfigError(msg)
        self._url = url
        self._display_url = display_url
        self._headers = dict(headers or {})
        self._timeout_ms = _positive_ms(timeout, f"{type(self).__name__} timeout")
        self.retry = retry
        self._limiter = _RateLimiter(rate_limit_per_s) if rate_limit_per_s else None
        self._redact = _Redactor(url, display_url, [*secrets, *self._headers.values()])
        self._log_filter = _RedactingFilter(self._redact)
        self._client: httpx.Client | None = None
        self._context = SinkContext()
        self._delivered: tuple[int, int] = (-1, 0)  # (batch id, rows of it already handled)

    def open(self, context: SinkContext) -> None:
        """Create the HTTP client; keep the context for dead letters, retry counts and the app name."""
        self._context = context
        self._ensure_client()

    def close(self) -> None:
        """Close the HTTP client. Idempotent."""
        if self._client is not None:
            self._client.close()
            self._client = None
            logging.getLogger("httpx").removeFilter(self._log_filter)

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        """Deliver each row of ``batch_id`` in order.

        Called again with the same batch id (the runtime retrying after
        ``SinkUnavailableError``), it resumes at the first row not yet
        handled; after a restart it sends the batch again, and the
        idempotency keys make the receiver ignore what it already has.

        Raises:
            SinkUnavailableError: a row could not be delivered after the retry
                policy; earlier rows were delivered.
            SinkError: the endpoint says the sink is misconfigured (3xx, 401,
                403, 404, 405, 407).
        """
        client = self._ensure_client()
        done_batch, done_rows = self._delivered
        for index in range(done_rows if done_batch == batch_id else 0, len(rows)):
            event = self._prepare(batch_id, index, rows[index])
            if event is not None:
                self._deliver(client, batch_id, index, event)
            self._delivered = (batch_id, index + 1)

    @abstractmethod
    def _prepare(self, batch_id: int, index: int, row: Any) -> _Event | None:
        """Build the request for one row, or dead-letter the row and return ``None``."""

    def _dead_letter(self, batch_id: int, index: int, raw: Any, reason: str) -> None:
        logger.warning("%s sink: batch %d row %d dead-lettered: %s", self.name, batch_id, index, reason)
        self._context.dead_letter(DeadLetter(reason=reason, source=self.name, raw=raw, error="sink",
                                             position={"sink": self.name, "batch_id": batch_id, "row": index}))

    def _ensure_client(self) -> httpx.Client:
        if self._client is None:
            timeout_s = self._timeout_ms / 1000
            self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False,
                                        headers=self._headers)
            logging.getLogger("httpx").addFilter(self._log_filter)
        return self._client

    def _deliver(self, client: httpx.Client, batch_id: int, index: int, event: _Event) -> None:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_RetriableError),
            stop=(tenacity.stop_after_attempt(self.retry.max_attempts)
                  | _StopOnLongRetryAfter(self.retry.max_retry_after_ms / 1000)),
            wait=self._wait,
            before_sleep=lambda state: self._before_sleep(state, batch_id, index),
            reraise=True)
        try:
            rejection = retrying(self._send_once, client, event)
        except _RetriableError as exc:
            msg = (f"{self.name} sink: could not deliver batch {batch_id} row {index} to {self._display_url} "
                   f"({exc.reason}, after {retrying.statistics.get('attempt_number', 1)} attempt(s)); "
                   f"the batch is held, not committed, and will be retried; check that the endpoint is up")
            raise SinkUnavailableError(msg, retry_after=exc.retry_after) from None
        if rejection is not None:
            self._dead_letter(batch_id, index, event.raw, rejection)
        else:
            logger.debug("%s sink: delivered batch %d row %d", self.name, batch_id, index)

    def _send_once(self, client: httpx.Client, event: _Event) -> str | None:
        """Send one attempt; return ``None`` when delivered, the reason when rejected for good.

        Raises:
            _RetriableError: a transient failure.
            SinkError: the endpoint or credentials are wrong.
        """
        if self._limiter is not None:
            self._limiter.acquire()
        try:
            response = client.post(self._url, content=event.body, headers=event.headers)
        except httpx.TimeoutException as exc:
            raise _RetriableError(f"no response within {self._timeout_ms} ms ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _RetriableError(f"{type(exc).__name__}: {self._redact(str(exc))}") from None
        except httpx.HTTPError as exc:
            msg = (f"{self.name} sink: request to {self._display_url} failed: "
                   f"{type(exc).__name__}: {self._redact(str(exc))}")
            raise SinkError(msg) from None
        status = response.status_code
        if 200 <= status < 300:
            return None
        detail = self._redact(response.text[:300].strip())
        if status in _RETRIABLE_STATUS or status >= 500:
            raise _RetriableError(f"HTTP {status}", _retry_after_s(response.headers.get("Retry-After")))
        if status < 400 or status in _MISCONFIGURED_STATUS:
            msg = (f"{self.name} sink: {self._display_url} answered HTTP {status} ({detail or 'no body'}); "
                   f"check the URL and credentials, then restart (the batch will be replayed)")
            raise SinkError(msg)
        return f"HTTP {status} from {self._display_url}: {detail or 'no body'}"

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _RetriableError) and exc.retry_after is not None:
            return exc.retry_after
        backoff = tenacity.wait_random_exponential(multiplier=self.retry.initial_backoff_ms / 1000,
                                                   min=self.retry.initial_backoff_ms / 1000,
                                                   max=self.retry.max_backoff_ms / 1000)
        return float(backoff(state))

    def _before_sleep(self, state: tenacity.RetryCallState, batch_id: int, index: int) -> None:
        self._context.on_retry()
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning("%s sink: batch %d row %d: %s (attempt %d of %d); retrying in %.3f s", self.name, batch_id,
                       index, getattr(exc, "reason", exc), state.attempt_number, self.retry.max_attempts, wait)


class WebhookSink(_HttpEventSink):
    """POSTs each row as a JSON body to ``url``, with an ``Idempotency-Key`` header.

    The key is the row's ``idempotency_key`` field (or what a callable returns
    for the row), else a hash of the app name, the batch id and the row's
    index — stable across replays because a replayed batch yields the same
    rows in the same order.

    >>> WebhookSink("https://hooks.example.com/T000/B000/XXXX", headers={"Authorization": "Bearer s3cret"})
    WebhookSink(url='https://hooks.example.com/…', headers={'Authorization': '***'})

    Args:
        url: the endpoint (http or https). Its path and query are treated as secret.
        headers: sent with every request; values are treated as secret.
        timeout: per-request timeout, a duration string or milliseconds.
        retry: the retry policy.
        rate_limit_per_s: at most this many requests per second (``None``: no limit).
        idempotency_key: a row field name or a callable ``row -> key``; ``None``
            derives the key from batch id and row index.
        idempotency_header: the header that carries the key.

    Raises:
        ConfigError: an argument is invalid.
    """

    name = "webhook"

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None, timeout: int | str = DEFAULT_TIMEOUT,
                 retry: RetryPolicy = DEFAULT_RETRY, rate_limit_per_s: float | None = None,
                 idempotency_key: str | Callable[[Any], Any] | None = None,
                 idempotency_header: str = "Idempotency-Key") -> None:
        super().__init__(url, mask_path=True, headers=headers, secrets=(), timeout=timeout,
                         retry=retry, rate_limit_per_s=rate_limit_per_s)
        self._idempotency_key = idempotency_key
        self._idempotency_header = idempotency_header

    def __repr__(self) -> str:
        return f"WebhookSink(url={self._display_url!r}, headers={dict.fromkeys(self._headers, _MASK)!r})"

    def _prepare(self, batch_id: int, index: int, row: Any) -> _Event | None:
        try:
            body = dumps(row)
        except TypeError as exc:
            self._dead_letter(batch_id, index, repr(row), f"row cannot be encoded as JSON: {exc}")
            return None
        field = self._idempotency_key
        if field is None:
            key = _hash(self._context.app_name, self.name, batch_id, index)
        elif callable(field):
            key = str(field(row))
        elif isinstance(row, Mapping) and field in row:
            key = str(row[field])
        else:
            self._dead_letter(batch_id, index, row, f"row has no idempotency key field {field!r}")
            return None
        return _Event(body=body, headers={"Content-Type": "application/json", self._idempotency_header: key}, raw=row)


_ACTIONS = ("trigger", "acknowledge", "resolve")
_SEVERITIES = ("critical", "error", "warning", "info")


@dataclasses.dataclass(frozen=True)
class Alert:
    """One PagerDuty event, as a handler yields it for :class:`PagerDutySink`.

    The incident's identity is ``(key, alert_id)``: the sink derives the
    ``dedup_key`` from the app name, the group key and ``alert_id``, so the
    trigger, its acknowledge and its resolve land on one incident, and a
    replayed batch or a retried request opens no second one. Give
    ``alert_id`` an episode part (``f"cpu-high-{window_start}"``) when each
    episode should be its own incident.

    >>> Alert(key="host-1", alert_id="cpu-high", summary="CPU above 90% for 5 minutes").severity
    'error'

    Attributes:
        key: the group key the alert is about.
        alert_id: the alert's identity within the key (a rule name).
        summary: one line for the on-call (required to trigger; cut at 1024 characters).
        action: ``"trigger"``, ``"acknowledge"`` or ``"resolve"``.
        severity: ``"critical"``, ``"error"``, ``"warning"`` or ``"info"``.
        source: the affected system; defaults to the sink's ``source`` or the app name.
        timestamp: when it happened: epoch ms, epoch seconds (float), datetime or ISO string.
        component, group, class_: PagerDuty's optional classification fields.
        custom_details: free-form details shown in the incident.
        dedup_key: use this instead of the derived key (to join an incident made elsewhere).

    Raises:
        ConfigError: ``action`` or ``severity`` is not one of PagerDuty's, or
            a trigger has no summary.
    """

    key: Any
    alert_id: str
    summary: str = ""
    action: str = "trigger"
    severity: str = "error"
    source: str | None = None
    timestamp: int | float | dt.datetime | str | None = None
    component: str | None = None
    group: str | None = None
    class_: str | None = None
    custom_details: Mapping[str, Any] | None = None
    dedup_key: str | None = None

    def __post_init__(self) -> None:
        if self.action not in _ACTIONS:
            msg = f"Alert action must be one of {', '.join(_ACTIONS)}; got {self.action!r}"
            raise ConfigError(msg)
        if self.severity not in _SEVERITIES:
            msg = f"Alert severity must be one of {', '.join(_SEVERITIES)}; got {self.severity!r}"
            raise ConfigError(msg)
        if self.action == "trigger" and not self.summary:
            msg = f"Alert {self.alert_id!r} for key {self.key!r}: a trigger needs a summary"
            raise ConfigError(msg)

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> Alert:
        """Build an alert from a dict with the attribute names (``class`` and ``event_action`` accepted too).

        Raises:
            ConfigError: a field is unknown or missing, or a value is invalid.
        """
        aliases = {"class": "class_", "event_action": "action"}
        fields = {aliases.get(name, name): value for name, value in row.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            msg = f"Alert has no field(s) {', '.join(map(repr, unknown))}; put extra data in 'custom_details'"
            raise ConfigError(msg)
        missing = [name for name in ("key", "alert_id") if name not in fields]
        if missing:
            msg = f"Alert needs {' and '.join(map(repr, missing))}; got fields {sorted(row)}"
            raise ConfigError(msg)
        return cls(**fields)


class PagerDutySink(_HttpEventSink):
    """Sends :class:`Alert` rows (or dicts with its fields) to the PagerDuty Events API v2.

    Rows that are not valid alerts, and events PagerDuty rejects (HTTP 400),
    are dead-lettered with the reason. The routing key is sent only in the
    request body; it is masked in the repr and redacted from every message.

    >>> PagerDutySink("R0UT1NGKEY0000000000000000000000")
    PagerDutySink(url='https://events.pagerduty.com/v2/enqueue', routing_key='***')

    Args:
        routing_key: the integration's routing key; ``None`` reads the
            ``PAGERDUTY_ROUTING_KEY`` environment variable.
        url: the Events API endpoint (tests point it at a local server).
        source: ``payload.source`` for alerts that do not set it (default: the app name).
        timeout: per-request timeout, a duration string or milliseconds.
        retry: the retry policy.
        rate_limit_per_s: at most this many requests per second (``None``: no limit).

    Raises:
        ConfigError: no routing key, or another argument is invalid.
    """

    name = "pagerduty"

    def __init__(self, routing_key: str | None = None, *, url: str = PAGERDUTY_EVENTS_URL, source: str | None = None,
                 timeout: int | str = DEFAULT_TIMEOUT, retry: RetryPolicy = DEFAULT_RETRY,
                 rate_limit_per_s: float | None = None) -> None:
        routing_key = routing_key or os.environ.get("PAGERDUTY_ROUTING_KEY")
        if not routing_key:
            msg = "PagerDutySink needs a routing key: pass routing_key=... or set PAGERDUTY_ROUTING_KEY"
            raise ConfigError(msg)
        super().__init__(url, mask_path=False, headers=None, secrets=[routing_key], timeout=timeout, retry=retry,
                         rate_limit_per_s=rate_limit_per_s)
        self._routing_key = routing_key
        self._source = source

    def __repr__(self) -> str:
        return f"PagerDutySink(url={self._display_url!r}, routing_key={_MASK!r})"

    def dedup_key(self, key: Any, alert_id: str) -> str:
        """Return the dedup key of alert ``alert_id`` of group ``key``: ``<app name>:<hash>``.

        Deterministic across processes and restarts; valid once the sink is open (it uses the app name).
        """
        return f"{self._context.app_name[:200]}:{_hash(self._context.app_name, key, alert_id)[:32]}"

    def _prepare(self, batch_id: int, index: int, row: Any) -> _Event | None:
        try:
            alert = row if isinstance(row, Alert) else Alert.from_mapping(row)
            body = dumps(self._body(alert))
        except (ConfigError, TypeError, ValueError, AttributeError) as exc:
            reason = f"not a valid PagerDuty alert: {self._redact(str(exc))}"
            self._dead_letter(batch_id, index, row if isinstance(row, Mapping) else repr(row), reason)
            return None
        return _Event(body=body, headers={"Content-Type": "application/json"}, raw=alert)

    def _body(self, alert: Alert) -> dict[str, Any]:
        body: dict[str, Any] = {"routing_key": self._routing_key, "event_action": alert.action,
                                "dedup_key": alert.dedup_key or self.dedup_key(alert.key, alert.alert_id)}
        if alert.action != "trigger":
            return body  # acknowledge and resolve carry only the dedup key
        payload: dict[str, Any] = {"summary": alert.summary[:1024],
                                   "source": alert.source or self._source or self._context.app_name,
                                   "severity": alert.severity}
        if alert.timestamp is not None:
            payload["timestamp"] = ms_to_datetime(to_epoch_ms(alert.timestamp)).isoformat()
        optional = {"component": alert.component, "group": alert.group, "class": alert.class_,
                    "custom_details": alert.custom_details}
        payload.update((name, value) for name, value in optional.items() if value is not None)
        body["payload"] = payload
        return body
