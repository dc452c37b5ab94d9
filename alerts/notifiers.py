"""One class per channel kind, one `send(alert, message)` method, one error type, one registry.

Each notifier is the only place its external system is touched. Every failure leaves as a
`TransportError`; `permanent=True` means retrying cannot help (bad address, missing topic, 4xx),
so the delivery becomes a dead letter at once instead of burning its attempts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any, ClassVar
from urllib.parse import urlparse

from django.conf import settings

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-IOps-Signature"
TIMESTAMP_HEADER = "X-IOps-Timestamp"
DELIVERY_HEADER = "X-IOps-Delivery"


class TransportError(Exception):
    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.message = message
        self.permanent = permanent


def message_body(message: dict[str, Any]) -> bytes:
    """The exact JSON bytes every JSON channel sends (the webhook signs these bytes)."""
    return json.dumps(message, separators=(",", ":"), sort_keys=True, default=str).encode()


def webhook_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<raw body>` with the channel secret."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


class Notifier:
    kind: ClassVar[str]
    label: ClassVar[str]
    # Shown in the admin next to the config field.
    config_help: ClassVar[str]

    def __init__(self, *, config: dict[str, Any], secret: str = "", name: str = ""):
        problems = self.config_errors(config or {}, secret)
        if problems:
            raise TransportError(f"channel {name!r} is incomplete: {'; '.join(problems)}", permanent=True)
        self.config = config
        self.secret = secret
        self.name = name

    @classmethod
    def config_errors(cls, config: dict[str, Any], secret: str) -> list[str]:
        """What is missing or malformed in a channel's settings; empty when it can send."""
        raise NotImplementedError

    def send(self, alert, message: dict[str, Any]) -> None:
        raise NotImplementedError


def _aws_client(service: str):
    import boto3
    from botocore.config import Config

    # One retry layer: the delivery row's next_attempt_at. botocore does not retry on its own.
    config = Config(
        region_name=settings.AWS_REGION,
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=settings.ALERT_WEBHOOK_TIMEOUT_SECONDS,
        read_timeout=settings.ALERT_WEBHOOK_TIMEOUT_SECONDS,
    )
    return boto3.client(service, endpoint_url=settings.AWS_ENDPOINT_URL or None, config=config)


# AWS error codes that retrying cannot fix (missing resource, bad request, no permission).
_AWS_PERMANENT = {
    "NotFound",
    "NotFoundException",
    "ResourceNotFoundException",
    "InvalidParameter",
    "InvalidParameterException",
    "InvalidParameterValue",
    "ValidationException",
    "AuthorizationError",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidSecurity",
    "KMSDisabled",
    "EndpointDisabled",
}


def _aws_error(service: str, exc: Exception) -> TransportError:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        return TransportError(f"{service} {code}: {exc}", permanent=code in _AWS_PERMANENT)
    if isinstance(exc, TransportError):
        return exc
    return TransportError(f"{service} unreachable: {exc.__class__.__name__}: {exc}")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [v.strip() for v in value if isinstance(v, str) and v.strip()]


class EmailNotifier(Notifier):
    kind = "email"
    label = "E-mail"
    config_help = '{"recipients": ["ops@example.com", ...]} — sent with EMAIL_BACKEND from DEFAULT_FROM_EMAIL'

    @classmethod
    def config_errors(cls, config, secret):
        recipients = _strings(config.get("recipients"))
        if not recipients:
            return ["config.recipients: at least one e-mail address is required"]
        bad = [r for r in recipients if "@" not in r]
        return [f"config.recipients: not an e-mail address: {', '.join(bad)}"] if bad else []

    def send(self, alert, message):
        import smtplib

        from django.core.mail import EmailMessage

        from alerts.messages import message_subject, message_text

        email = EmailMessage(
            subject=message_subject(message),
            body=message_text(message),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=_strings(self.config.get("recipients")),
        )
        try:
            email.send(fail_silently=False)
        except smtplib.SMTPRecipientsRefused as exc:
            raise TransportError(f"recipients refused: {list(exc.recipients)}", permanent=True) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise TransportError(f"smtp: {exc.__class__.__name__}: {exc}") from exc


class SnsNotifier(Notifier):
    kind = "sns"
    label = "AWS SNS topic"
    config_help = '{"topic_arn": "arn:aws:sns:us-east-1:123456789012:iops-critical"}'

    @classmethod
    def config_errors(cls, config, secret):
        arn = config.get("topic_arn")
        if not isinstance(arn, str) or not arn.startswith("arn:") or ":sns:" not in arn:
            return ["config.topic_arn: an SNS topic ARN (arn:aws:sns:…) is required"]
        return []

    def send(self, alert, message):
        from alerts.messages import message_subject

        attributes = {
            "severity": {"DataType": "String", "StringValue": message["severity"]},
            "type": {"DataType": "String", "StringValue": message["type"]},
            "entity_type": {"DataType": "String", "StringValue": message["entity"]["type"]},
        }
        try:
            _aws_client("sns").publish(
                TopicArn=self.config["topic_arn"],
                Subject=message_subject(message, limit=99, ascii_only=True),
                Message=message_body(message).decode(),
                MessageAttributes=attributes,
            )
        except Exception as exc:  # noqa: BLE001 - every boto failure becomes a TransportError
            raise _aws_error("sns", exc) from exc


class EventBridgeNotifier(Notifier):
    kind = "eventbridge"
    label = "AWS EventBridge bus"
    config_help = '{"event_bus_name": "iops-alerts", "source": "iops.alerts"} — DetailType is the alert type'

    DEFAULT_SOURCE = "iops.alerts"
    _TRANSIENT_ENTRY_CODES = {"ThrottlingException", "InternalFailure", "InternalException"}

    @classmethod
    def config_errors(cls, config, secret):
        problems = []
        bus = config.get("event_bus_name")
        if not isinstance(bus, str) or not bus.strip():
            problems.append("config.event_bus_name: the EventBridge bus name or ARN is required")
        source = config.get("source", cls.DEFAULT_SOURCE)
        if not isinstance(source, str) or not source.strip() or source.startswith("aws."):
            problems.append("config.source: a non-empty source not starting with 'aws.'")
        return problems

    def send(self, alert, message):
        entry = {
            "Source": self.config.get("source", self.DEFAULT_SOURCE),
            "DetailType": message["type"],
            "Detail": message_body(message).decode(),
            "EventBusName": self.config["event_bus_name"],
            "Resources": [],
        }
        try:
            response = _aws_client("events").put_events(Entries=[entry])
        except Exception as exc:  # noqa: BLE001 - every boto failure becomes a TransportError
            raise _aws_error("eventbridge", exc) from exc
        if response.get("FailedEntryCount"):
            failed = response["Entries"][0]
            code = failed.get("ErrorCode", "")
            raise TransportError(
                f"eventbridge {code}: {failed.get('ErrorMessage', '')}",
                permanent=code not in self._TRANSIENT_ENTRY_CODES,
            )


class WebhookNotifier(Notifier):
    kind = "webhook"
    label = "Signed webhook"
    config_help = (
        '{"url": "https://hooks.example.com/iops"} — POSTs the JSON message with '
        "X-IOps-Timestamp and X-IOps-Signature: sha256=HMAC(secret, timestamp + '.' + body)"
    )

    @classmethod
    def config_errors(cls, config, secret):
        problems = []
        url = config.get("url")
        parsed = urlparse(url) if isinstance(url, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
            problems.append("config.url: an http(s) URL is required")
        if len(secret or "") < 16:
            problems.append("secret: a signing secret of at least 16 characters is required")
        return problems

    def send(self, alert, message):
        import httpx

        body = message_body(message)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "IOps-Alerts/1",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: webhook_signature(secret=self.secret, timestamp=timestamp, body=body),
        }
        if message.get("delivery_id") is not None:
            headers[DELIVERY_HEADER] = str(message["delivery_id"])
        try:
            response = httpx.post(
                self.config["url"],
                content=body,
                headers=headers,
                timeout=settings.ALERT_WEBHOOK_TIMEOUT_SECONDS,
                follow_redirects=False,
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"webhook: {exc.__class__.__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        # Client errors will not change on retry, except timeouts and rate limits.
        permanent = 400 <= status < 500 and status not in (408, 409, 425, 429)
        raise TransportError(f"webhook answered HTTP {status}", permanent=permanent)


NOTIFIERS: dict[str, type[Notifier]] = {
    cls.kind: cls for cls in (EmailNotifier, SnsNotifier, EventBridgeNotifier, WebhookNotifier)
}


def notifier_choices() -> list[tuple[str, str]]:
    """The model's `kind` choices, derived from the registry."""
    return [(kind, cls.label) for kind, cls in NOTIFIERS.items()]


def notifier_for(channel) -> Notifier:
    cls = NOTIFIERS.get(channel.kind)
    if cls is None:
        raise TransportError(f"unknown channel kind {channel.kind!r}", permanent=True)
    return cls(config=channel.config or {}, secret=channel.secret, name=channel.name)


def dead_letter_mirror(*, queue_url: str, body: dict[str, Any]) -> None:
    """Copy a dead letter to an SQS queue (ALERT_DLQ_SQS_URL), like the prototype's 14-day DLQ."""
    try:
        _aws_client("sqs").send_message(
            QueueUrl=queue_url,
            MessageBody=message_body(body).decode(),
            MessageAttributes={
                "channel_kind": {"DataType": "String", "StringValue": str(body.get("channel_kind", ""))},
                "severity": {"DataType": "String", "StringValue": str(body.get("severity", ""))},
            },
        )
    except Exception as exc:  # noqa: BLE001 - every boto failure becomes a TransportError
        raise _aws_error("sqs", exc) from exc
