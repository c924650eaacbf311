"""Webhook sinks: ``WebhookSink`` (a JSON POST per row) and ``PagerDutySink`` (Events API v2).

Needs the ``webhook`` extra (httpx for HTTP, tenacity for retry policies).

Delivery, per row and in row order (so a ``resolve`` never overtakes its
``trigger``)::

    2xx                          delivered
    408, 425, 429, 5xx,          retried with jittered exponential backoff (``RetryPolicy``)
    connection error, timeout    (waiting at least the server's Retry-After)
    other 4xx (400, 413, 422)    permanent: dead-lettered with the reason, the batch goes on
    3xx, 401, 403, 404, 405, 407 misconfiguration: SinkError, the app stops (nothing is lost)

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
import os
from collections.abc import Callable, Mapping
from typing import Any

from statefulstream.durations import Duration
from statefulstream.errors import ConfigError
from statefulstream.json_rows import dumps
from statefulstream.retry import RetryPolicy
from statefulstream.sinks._http import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    MASK,
    Event,
    HttpEventSink,
    stable_hash,
)
from statefulstream.timeutil import ms_to_datetime, to_epoch_ms

__all__ = ["DEFAULT_RETRY", "DEFAULT_TIMEOUT", "PAGERDUTY_EVENTS_URL", "Alert", "PagerDutySink", "RetryPolicy",
           "WebhookSink"]

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
"""The PagerDuty Events API v2 endpoint."""


class WebhookSink(HttpEventSink):
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
        timeout: per-request timeout, e.g. ``"10 seconds"`` or a ``timedelta``.
        retry: the retry policy.
        rate_limit_per_s: at most this many requests per second (``None``: no limit).
        idempotency_key: a row field name or a callable ``row -> key``; ``None``
            derives the key from batch id and row index.
        idempotency_header: the header that carries the key.

    Raises:
        ConfigError: an argument is invalid.
    """

    name = "webhook"

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None, timeout: Duration = DEFAULT_TIMEOUT,
                 retry: RetryPolicy = DEFAULT_RETRY, rate_limit_per_s: float | None = None,
                 idempotency_key: str | Callable[[Any], Any] | None = None,
                 idempotency_header: str = "Idempotency-Key") -> None:
        super().__init__(url, mask_path=True, headers=headers, secrets=(), timeout=timeout,
                         retry=retry, rate_limit_per_s=rate_limit_per_s)
        self._idempotency_key = idempotency_key
        self._idempotency_header = idempotency_header

    def __repr__(self) -> str:
        return f"WebhookSink(url={self._display_url!r}, headers={dict.fromkeys(self._headers, MASK)!r})"

    def _prepare(self, batch_id: int, index: int, row: Any) -> Event | None:
        try:
            body = dumps(row)
        except TypeError as exc:
            self._dead_letter(batch_id, index, repr(row), f"row cannot be encoded as JSON: {exc}")
            return None
        field = self._idempotency_key
        if field is None:
            key = stable_hash(self.context.app_name, self.name, batch_id, index)
        elif callable(field):
            key = str(field(row))
        elif isinstance(row, Mapping) and field in row:
            key = str(row[field])
        else:
            self._dead_letter(batch_id, index, row, f"row has no idempotency key field {field!r}")
            return None
        return Event(body=body, headers={"Content-Type": "application/json", self._idempotency_header: key}, raw=row)


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


class PagerDutySink(HttpEventSink):
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
        timeout: per-request timeout, e.g. ``"10 seconds"`` or a ``timedelta``.
        retry: the retry policy.
        rate_limit_per_s: at most this many requests per second (``None``: no limit).

    Raises:
        ConfigError: no routing key, or another argument is invalid.
    """

    name = "pagerduty"

    def __init__(self, routing_key: str | None = None, *, url: str = PAGERDUTY_EVENTS_URL, source: str | None = None,
                 timeout: Duration = DEFAULT_TIMEOUT, retry: RetryPolicy = DEFAULT_RETRY,
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
        return f"PagerDutySink(url={self._display_url!r}, routing_key={MASK!r})"

    def dedup_key(self, key: Any, alert_id: str) -> str:
        """Return the dedup key of alert ``alert_id`` of group ``key``: ``<app name>:<hash>``.

        Deterministic across processes and restarts; valid once the sink is open (it uses the app name).
        """
        return f"{self.context.app_name[:200]}:{stable_hash(self.context.app_name, key, alert_id)[:32]}"

    def _prepare(self, batch_id: int, index: int, row: Any) -> Event | None:
        try:
            alert = row if isinstance(row, Alert) else Alert.from_mapping(row)
            body = dumps(self._body(alert))
        except (ConfigError, TypeError, ValueError, AttributeError) as exc:
            reason = f"not a valid PagerDuty alert: {self._redact(str(exc))}"
            self._dead_letter(batch_id, index, row if isinstance(row, Mapping) else repr(row), reason)
            return None
        return Event(body=body, headers={"Content-Type": "application/json"}, raw=alert)

    def _body(self, alert: Alert) -> dict[str, Any]:
        body: dict[str, Any] = {"routing_key": self._routing_key, "event_action": alert.action,
                                "dedup_key": alert.dedup_key or self.dedup_key(alert.key, alert.alert_id)}
        if alert.action != "trigger":
            return body  # acknowledge and resolve carry only the dedup key
        payload: dict[str, Any] = {"summary": alert.summary[:1024],
                                   "source": alert.source or self._source or self.context.app_name,
                                   "severity": alert.severity}
        if alert.timestamp is not None:
            payload["timestamp"] = ms_to_datetime(to_epoch_ms(alert.timestamp)).isoformat()
        optional = {"component": alert.component, "group": alert.group, "class": alert.class_,
                    "custom_details": alert.custom_details}
        payload.update((name, value) for name, value in optional.items() if value is not None)
        body["payload"] = payload
        return body
