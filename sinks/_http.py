"""HTTP delivery shared by the webhook sinks: one request per row, retried, rate-limited, redacted.

Private to the ``sinks`` package; users import from :mod:`statefulstream.sinks.webhook`, whose
docstring lists how each response and failure is handled.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import email.utils
import hashlib
import json
import logging
import math
import time
import urllib.parse
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from statefulstream.durations import Duration, positive_duration_ms
from statefulstream.errors import ConfigError, SinkError, SinkUnavailableError
from statefulstream.json_rows import dumps
from statefulstream.records import DeadLetter
from statefulstream.retry import RetryPolicy
from statefulstream.sink import Sink, SinkContext

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = "10 seconds"
"""Per-request timeout (connect, read, write and pool each) unless a sink is given one."""

_RETRIABLE_STATUS = frozenset({408, 425, 429})
_MISCONFIGURED_STATUS = frozenset({401, 403, 404, 405, 407})
MASK = "***"
MIN_SECRET_LEN = 4
"""Shorter secrets (or parts of them) are not masked on their own; see ``secrets_of``."""


DEFAULT_RETRY = RetryPolicy()
"""5 attempts, 200 ms doubling to at most 30 s (jittered), Retry-After honoured up to 5 minutes."""


class _RetriableError(Exception):
    """One attempt failed in a way a later attempt may not (its message is already redacted)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True)
class Event:
    """One prepared request: the body, its headers, and the row as dead letters show it."""

    body: bytes
    headers: Mapping[str, str]
    raw: Any


_HTTP_LOGGERS = ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy",
                 "httpcore.socks")
"""The loggers of the HTTP client; a logger's filters do not apply to its children's records, so each is named."""


def secrets_of(url: str, *, mask_path: bool, headers: Mapping[str, str], extra: Sequence[str]) -> list[str]:
    """Every form in which a sink's secrets may come back in text, longest first.

    The secrets are ``extra`` (e.g. a routing key), every header value, the
    URL's password and query (each value, and the whole query), and with
    ``mask_path`` the URL's path. Each is listed as given, percent-decoded,
    and JSON-escaped (receivers often echo a request as JSON); a password
    also as the ``Basic`` credential httpx sends for it, and a header's
    ``Basic``/``Bearer`` credential also alone and decoded. Forms shorter
    than ``MIN_SECRET_LEN`` are left out: masking ``x=1``'s ``1`` would garble
    every message, and the longer forms holding them are still masked.

    >>> secrets_of("https://me:pass@h/p?key=t0ken&n=1", mask_path=False, headers={}, extra=[])
    ['key=t0ken&n=1', 'bWU6cGFzcw==', 't0ken', 'pass']
    """
    parsed = httpx.URL(url)
    found: list[str] = [*extra]
    if parsed.password:
        found += [parsed.password, _basic(parsed.username, parsed.password)]
    query = parsed.query.decode("ascii", errors="replace")
    if query:
        found += [query, *(v for _, v in parsed.params.multi_items())]
    if mask_path and parsed.raw_path not in (b"", b"/"):
        found += [parsed.raw_path.decode("ascii", errors="replace"), parsed.path]
    for value in headers.values():
        found.append(value)
        scheme, _, credential = value.partition(" ")
        if credential:
            found.append(credential.strip())
        if scheme.lower() == "basic":
            decoded = _unbasic(credential.strip())
            found += [decoded, decoded.partition(":")[2]]
    forms = set()
    for secret in found:
        if secret:
            forms |= {secret, urllib.parse.unquote_plus(secret), json.dumps(secret)[1:-1]}
    return sorted((f for f in forms if len(f) >= MIN_SECRET_LEN), key=lambda f: (-len(f), f))


def _basic(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _unbasic(credential: str) -> str:
    try:
        return base64.b64decode(credential, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return ""


class _Redactor:
    """Replaces secrets in text: the full URL by its display form, then each secret by ``***``."""

    def __init__(self, url: str, display_url: str, secrets: Sequence[str]) -> None:
        # The URL as given and as httpx normalises it (what httpx's request log prints).
        pairs = [(u, display_url) for u in dict.fromkeys((url, str(httpx.URL(url)))) if u != display_url]
        pairs += [(s, MASK) for s in secrets]
        self._pairs = pairs

    def __call__(self, text: str) -> str:
        for secret, mask in self._pairs:
            text = text.replace(secret, mask)
        return text


class _RedactingFilter(logging.Filter):
    """Redacts secrets from the records of the HTTP client's loggers (httpx logs each request's full URL)."""

    def __init__(self, redact: _Redactor) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = self._redact(text)
        if clean != text:
            record.msg, record.args = clean, None
        return True


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


def _display_url(url: str, *, mask_path: bool) -> str:
    """Return the URL as logs show it: never credentials or a query; with ``mask_path`` not the path either.

    >>> _display_url("https://u:pw@h:8443/hooks/T0KEN?sig=x", mask_path=True)
    'https://h:8443/…'
    >>> _display_url("https://u:pw@h/v2/enqueue?sig=x", mask_path=False)
    'https://h/v2/enqueue?…'
    """
    parsed = httpx.URL(url)
    origin = f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")
    if mask_path:
        return origin + ("/…" if parsed.raw_path not in (b"", b"/") else "")
    return origin + parsed.path + ("?…" if parsed.query else "")


def stable_hash(*parts: Any) -> str:
    return hashlib.sha256(dumps(parts)).hexdigest()


class HttpEventSink(Sink):
    """Delivery shared by the webhook sinks: one request per row, retried, rate-limited, redacted."""

    def __init__(self, url: str, *, mask_path: bool, headers: Mapping[str, str] | None, secrets: Sequence[str],
                 timeout: Duration, retry: RetryPolicy, rate_limit_per_s: float | None) -> None:
        try:
            scheme = httpx.URL(url).scheme
        except (httpx.InvalidURL, TypeError) as exc:
            msg = f"{type(self).__name__} url is not a valid URL ({type(exc).__name__})"
            raise ConfigError(msg) from None
        display_url = _display_url(url, mask_path=mask_path)
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
        self._timeout_ms = positive_duration_ms(timeout, name=f"{type(self).__name__} timeout")
        self.retry = retry
        self._limiter = _RateLimiter(rate_limit_per_s) if rate_limit_per_s else None
        self._redact = _Redactor(url, display_url,
                                 secrets_of(url, mask_path=mask_path, headers=self._headers, extra=secrets))
        self._log_filter = _RedactingFilter(self._redact)
        self._client: httpx.Client | None = None
        self._context: SinkContext | None = None
        self._delivered: tuple[int, int] = (-1, 0)  # (batch id, rows of it already handled)

    def open(self, context: SinkContext) -> None:
        """Create the HTTP client; keep the context for dead letters, retry counts and the app name."""
        self._context = context
        self._ensure_client()

    @property
    def context(self) -> SinkContext:
        """The context given to ``open``.

        Raises:
            SinkError: the sink was not opened; keys derived from the app name
                and dead letters need the context, so nothing is sent.
        """
        if self._context is None:
            msg = (f"{self.name} sink used before open(); the runtime opens its sinks — when using one directly, "
                   f"call sink.open(SinkContext(app_name=...)) first")
            raise SinkError(msg)
        return self._context

    def close(self) -> None:
        """Close the HTTP client. Idempotent."""
        if self._client is not None:
            self._client.close()
            self._client = None
            for name in _HTTP_LOGGERS:
                logging.getLogger(name).removeFilter(self._log_filter)

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
        self.context  # noqa: B018 - fail before sending anything if the sink was never opened
        client = self._ensure_client()
        done_batch, done_rows = self._delivered
        for index in range(done_rows if done_batch == batch_id else 0, len(rows)):
            event = self._prepare(batch_id, index, rows[index])
            if event is not None:
                self._deliver(client, batch_id, index, event)
            self._delivered = (batch_id, index + 1)

    @abstractmethod
    def _prepare(self, batch_id: int, index: int, row: Any) -> Event | None:
        """Build the request for one row, or dead-letter the row and return ``None``."""

    def _dead_letter(self, batch_id: int, index: int, raw: Any, reason: str) -> None:
        logger.warning("%s sink: batch %d row %d dead-lettered: %s", self.name, batch_id, index, reason)
        self.context.dead_letter(DeadLetter(reason=reason, source=self.name, raw=raw, error="sink",
                                             position={"sink": self.name, "batch_id": batch_id, "row": index}))

    def _ensure_client(self) -> httpx.Client:
        if self._client is None:
            timeout_s = self._timeout_ms / 1000
            self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False,
                                        headers=self._headers)
            for name in _HTTP_LOGGERS:
                logging.getLogger(name).addFilter(self._log_filter)
        return self._client

    def _deliver(self, client: httpx.Client, batch_id: int, index: int, event: Event) -> None:
        attempts = 0

        def send() -> str | None:
            nonlocal attempts
            attempts += 1
            return self._send_once(client, event)

        def on_retry(exc: BaseException, attempt: int, wait_s: float) -> None:
            self.context.on_retry()
            logger.warning("%s sink: batch %d row %d: %s (attempt %d of %s); retrying in %.3f s", self.name,
                           batch_id, index, getattr(exc, "reason", exc), attempt,
                           self.retry.max_attempts or "unlimited", wait_s)

        try:
            rejection = self.retry.call(send, retry_on=_RetriableError, on_retry=on_retry)
        except _RetriableError as exc:
            msg = (f"{self.name} sink: could not deliver batch {batch_id} row {index} to {self._display_url} "
                   f"({exc.reason}, after {attempts} attempt(s)); "
                   f"the batch is held, not committed, and will be retried; check that the endpoint is up")
            raise SinkUnavailableError(msg, retry_after=exc.retry_after) from None
        if rejection is not None:
            self._dead_letter(batch_id, index, event.raw, rejection)
        else:
            logger.debug("%s sink: delivered batch %d row %d", self.name, batch_id, index)

    def _send_once(self, client: httpx.Client, event: Event) -> str | None:
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
        detail = self._redact(response.text)[:300].strip()  # redact before cutting, or half a secret shows
        if status in _RETRIABLE_STATUS or status >= 500:
            raise _RetriableError(f"HTTP {status}", _retry_after_s(response.headers.get("Retry-After")))
        if status < 400 or status in _MISCONFIGURED_STATUS:
            msg = (f"{self.name} sink: {self._display_url} answered HTTP {status} ({detail or 'no body'}); "
                   f"check the URL and credentials, then restart (the batch will be replayed)")
            raise SinkError(msg)
        return f"HTTP {status} from {self._display_url}: {detail or 'no body'}"
