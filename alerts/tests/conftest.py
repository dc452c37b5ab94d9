"""Fixtures of the alerts tests."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

# --- delivery (issue 5, notify): real peers for every channel kind -------------------------------

WEBHOOK_SECRET = "test-secret-0123456789abcdef"


class WebhookPeer:
    """A local HTTP server that checks the IOps signature like a real receiver would.

    Answers 401 to a bad signature; `fail_next` requests get `fail_status`; `delay` seconds of
    stalling simulate a slow endpoint. `received` holds the accepted JSON bodies (with headers)."""

    def __init__(self, secret: str = WEBHOOK_SECRET):
        self.secret = secret
        self.fail_next = 0
        self.fail_status = 500
        self.delay = 0.0
        self.requests = 0
        self.received: list[dict] = []
        self.lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                timestamp = self.headers.get("X-IOps-Timestamp", "")
                expected = hmac.new(
                    peer.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
                ).hexdigest()
                signature = self.headers.get("X-IOps-Signature", "")
                if peer.delay:
                    time.sleep(peer.delay)  # bounded: the client's timeout is what is under test
                with peer.lock:
                    peer.requests += 1
                    if not hmac.compare_digest(signature, f"sha256={expected}"):
                        status = 401
                    elif peer.fail_next > 0:
                        peer.fail_next -= 1
                        status = peer.fail_status
                    else:
                        status = 204
                        peer.received.append(
                            {"body": json.loads(body), "headers": dict(self.headers.items())}
                        )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hooks/iops"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def webhook_peer():
    with WebhookPeer() as peer:
        yield peer


@pytest.fixture
def aws(settings, moto_endpoint, monkeypatch):
    """Point the app's boto3 clients at moto; yields a factory of test clients for the same server."""
    import boto3

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(var, "testing")
    settings.AWS_ENDPOINT_URL = moto_endpoint
    settings.AWS_REGION = "us-east-1"
    return lambda service: boto3.client(service, endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def sqs_queue(aws):
    """A fresh SQS queue: (url, arn, read) where read() waits (bounded) for the messages' bodies."""
    sqs = aws("sqs")
    url = sqs.create_queue(QueueName=f"iops-test-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def read(expected: int = 1) -> list[dict]:
        bodies: list[dict] = []
        deadline = time.monotonic() + 5
        while len(bodies) < expected and time.monotonic() < deadline:
            resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            bodies += [json.loads(m["Body"]) for m in resp.get("Messages", [])]
        return bodies

    yield url, arn, read
    sqs.delete_queue(QueueUrl=url)


@pytest.fixture
def make_channel(db):
    def _make(kind: str = "email", **fields):
        from alerts.models import NotificationChannel

        defaults = {
            "email": {"config": {"recipients": ["ops@example.com"]}},
            "webhook": {"config": {"url": "http://127.0.0.1:9/none"}, "secret": WEBHOOK_SECRET},
        }.get(kind, {})
        values = {"name": f"{kind}-{uuid.uuid4().hex[:8]}", "kind": kind, "min_severity": "info"}
        values.update(defaults)
        values.update(fields)
        channel = NotificationChannel(**values)
        channel.full_clean()
        channel.save()
        return channel

    return _make


@pytest.fixture
def make_alert(db):
    """An Alert row as the rules would leave it (fingerprint unique per call)."""

    def _make(
        *,
        type: str = "low_health_score",  # noqa: A002
        severity: str = "critical",
        entity_type: str = "student",
        entity_id: str = "stu_1",
        message: str | None = None,
        details: dict | None = None,
        now=None,
    ):
        from django.utils import timezone

        from alerts.models import Alert

        now = now or timezone.now()
        return Alert.objects.create(
            fingerprint=f"{type}:{entity_type}:{entity_id}:{uuid.uuid4().hex[:6]}",
            type=type,
            severity=severity,
            entity_type=entity_type,
            entity_id=entity_id,
            message=message or f"Student {entity_id} health 42 (below 50)",
            details={"platform_health_score": 42.0, "threshold": 50.0} if details is None else details,
            first_seen=now,
            last_seen=now,
        )

    return _make
