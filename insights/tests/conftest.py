"""Fixtures of the insights tests: a Bedrock client under botocore's Stubber, a scorable student."""

from __future__ import annotations

import pytest
from botocore.stub import ANY, Stubber

from conftest import event

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
    bedrock.get_client.cache_clear()
    yield settings
    bedrock.get_client.cache_clear()


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
    """Make students known to metrics (a platform health reading each); returns the helper."""

    def _make(student_id: str, health: float = 40) -> str:
        resp = post(event("customer_health_update", student_id=student_id, health_score=health))
        assert resp.status_code == 202
        drain()
        return student_id

    return _make
