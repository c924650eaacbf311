"""The app's configuration as the status page shows it, with secrets masked.

Sources and sinks describe themselves by their ``repr`` (which already masks
what they know to be secret, e.g. ``KafkaSource`` client settings). As a
second line of defence every text shown here goes through :func:`mask_text`,
which hides values of secret-looking settings and passwords in URLs.

>>> mask_text("KafkaSource(config={'sasl.password': 'hunter2', 'sasl.username': 'ann'})")
"KafkaSource(config={'sasl.password': '***', 'sasl.username': 'ann'})"
>>> mask_text("WebhookSink('https://bot:s3cret@hooks.example/x', token=abc123)")
"WebhookSink('https://bot:***@hooks.example/x', token=***)"
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from statefulstream.triggers import Trigger, TriggerKind

if TYPE_CHECKING:
    from statefulstream.app import App

MASK = "***"
"""What a masked value is shown as."""

_SECRET_NAME = (r"[\w.\-]*(?:password|passwd|secret|token|credential|api[_.\-]?key|private[_.\-]?key|ssl\.key"
                r"|authorization)[\w.\-]*")
# 'name': 'value' / "name": "value" / name='value' / name=value, for a secret-looking name.
_PAIR = re.compile(
    rf"""(?P<name>['"]?{_SECRET_NAME}['"]?\s*[:=]\s*)(?P<q>['"])?(?P<value>(?(q)[^'"]*|[^\s,)}}\]]*))(?(q)(?P=q))""",
    re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.\-]*://[^/\s:@'\"]+:)[^@/\s'\"]+(?P<tail>@)", re.IGNORECASE)


def mask_text(text: str) -> str:
    """Return ``text`` with secret-looking settings' values and URL passwords replaced by ``***``."""
    text = _PAIR.sub(lambda m: f"{m['name']}{m['q'] or ''}{MASK}{m['q'] or ''}", text)
    return _URL_PASSWORD.sub(rf"\g<head>{MASK}\g<tail>", text)


def trigger_text(trigger: Trigger) -> str:
    """Return a trigger as the page shows it: ``default``, ``once``, ``available_now`` or ``every N ms``."""
    if trigger.kind is TriggerKind.PROCESSING_TIME:
        return f"every {trigger.interval_ms} ms"
    return trigger.kind.value


def app_config(app: App) -> dict[str, Any]:
    """Return the app's configuration (texts masked with :func:`mask_text`)."""
    op = app.operator
    operator: dict[str, Any] | None = None
    if op is not None:
        operator = {"name": op.name, "key": op.key_spec, "output_mode": op.output_mode.value,
                    "timeout": op.timeout.value, "watermark_delay_ms": op.watermark_delay_ms,
                    "sinks": [mask_text(repr(s)) for s in op.sinks],
                    "state_sinks": [mask_text(repr(s)) for s in op.state_sinks]}
        if op.processor is not None:  # a transform_with_state operator: its timers follow the time mode
            operator["time_mode"] = op.time_mode.value
    return {
        "name": app.name,
        "source": mask_text(repr(app.source)),
        "steps": [step.name for step in app.steps],
        "operator": operator,
        "trigger": trigger_text(app.trigger),
        "max_records_per_trigger": app.max_records_per_trigger,
        "checkpoint_dir": app.checkpoint_dir,
        "keep_batches": app.keep_batches,
        "state_cache_keys": app.state_cache_keys,
        "dead_letters": mask_text(repr(app.dead_letter_sink)),
        "metrics_address": None if app.metrics_address is None else str(app.metrics_address),
        "state_queries": app.state_queries,
    }
