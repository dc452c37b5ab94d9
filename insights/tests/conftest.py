"""Fixtures of the insights tests: a Bedrock client under botocore's Stubber, a scorable student."""

from __future__ import annotations

import pytest
from botocore.stub import ANY, Stubber

from conftest import platform_reading

MODEL_ID = "us.anthropic.claude-haiku-4-5-20251001-v1:0"


@pytest.fixture
def bedrock_settings(settings, monkeypatch):
    """Bedrock on, as in a production worker (not eager), with fake credentials and no backoff wait."""
    from insights import bedrock

    settings.BEDROCK_MODEL_ID = MODEL_ID
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.INSIGHTS_BEDROCK_BACKOFF_SECONDS = 0.0
    settings.INSIGHTS_BEDROCK_THROTTLE_RETRIES = 2
    settings.INSIGHTS_CACHE_MINUTES = 0
    settings.AWS_ENDPOINT_URL = None
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bedrock.reset()
    yield settings
    bedrock.reset()


@pytest.fixture
def converse(bedrock_settings):
    """The Stubber on the client insights uses; queue replies with .reply(text) / .error(code)."""
    from insights import bedrock

    stubber = Stubber(bedrock.get_client())

    def reply(text: str) -> None:
        stubber.add_response(
            "converse",
            {
                "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 180, "outputTokens": 90, "totalTokens": 270},
                "metrics": {"latencyMs": 420},
            },
            {"modelId": MODEL_ID, "system": ANY, "messages": ANY, "inferenceConfig": ANY},
        )

    def error(code: str, status: int = 400) -> None:
        stubber.add_client_error("converse", service_error_code=code, http_status_code=status)

    stubber.reply = reply
    stubber.error = error
    with stubber:
        yield stubber


@pytest.fixture
def scorable(post, drain):
    """Make students known to metrics and scored: weeks of history, then a platform reading (the
    default, 40 against their usual 85, puts them at health 40); returns the helper."""

    def _make(student_id: str, health: float = 40) -> str:
        platform_reading(post, drain, health, student=student_id)
        return student_id

    return _make


class FakeBedrock:
    """A local HTTP server answering Converse like Bedrock does; counts the calls it receives."""

    def __init__(self, reply: dict, delay: float = 0.0) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.calls = 0
        self.reply = reply
        self.delay = delay
        lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                import json
                import time

                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    fake.calls += 1
                time.sleep(fake.delay)  # keeps concurrent calls in flight together
                body = json.dumps(
                    {
                        "output": {
                            "message": {"role": "assistant", "content": [{"text": json.dumps(fake.reply)}]}
                        },
                        "stopReason": "end_turn",
                        "usage": {"inputTokens": 180, "outputTokens": 90, "totalTokens": 270},
                        "metrics": {"latencyMs": 5},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def fake_bedrock(bedrock_settings):
    """Bedrock on a local port (AWS_ENDPOINT_URL): real HTTP calls through boto3, counted."""
    from insights import bedrock

    fake = FakeBedrock(
        {
            "risk": 0.8,
            "level": "high",
            "explanation": "Health is low and support calls are rising.",
            "recommendations": ["Call the student today", "Offer a make-up session"],
        },
        delay=0.3,
    )
    bedrock_settings.AWS_ENDPOINT_URL = fake.url
    bedrock.reset()
    yield fake
    fake.close()
