"""Bedrock scoring at the edge (botocore Stubber, a silent TCP peer): replies, retries, fallbacks."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from insights import bedrock
from insights.models import Insight
from insights.tasks import score_churn
from metrics.health import churn_probability

pytestmark = pytest.mark.django_db

GOOD = {
    "risk": 0.82,
    "level": "high",
    "explanation": "Health fell to 40 and the student stopped booking; likely to churn.",
    "recommendations": ["Call the student today", "Offer a free make-up session"],
}


def score(student_id: str) -> Insight:
    return Insight.objects.get(pk=score_churn.apply(args=("student", student_id)).get())


def test_good_reply_is_stored_with_the_local_drivers(converse, scorable):
    converse.reply(json.dumps(GOOD))
    insight = score(scorable("stu_1"))
    assert insight.model == "bedrock:us.anthropic.claude-haiku-4-5-20251001-v1:0"
    # The risk, level and drivers are ours (one definition of risk): the model writes the words.
    assert (insight.risk, insight.level, insight.fallback_reason) == (churn_probability(40), "high", "")
    assert insight.explanation == GOOD["explanation"]
    assert insight.recommendations == GOOD["recommendations"]
    assert insight.drivers[0]["feature"] == "platform"  # measured deductions, not the LLM's
    converse.assert_no_pending_responses()


@pytest.mark.parametrize(
    "text",
    [
        "Here is my assessment:\n" + json.dumps(GOOD) + "\nLet me know if you need more.",
        "```json\n" + json.dumps(GOOD, indent=2) + "\n```",
        "Sure! {not json} then ```\n" + json.dumps(GOOD) + "\n```",
    ],
    ids=["prose", "json-fence", "bare-fence-after-junk"],
)
def test_reply_wrapped_in_prose_or_a_code_fence_is_parsed(converse, scorable, text):
    converse.reply(text)
    insight = score(scorable("stu_1"))
    assert insight.model.startswith("bedrock:") and insight.explanation == GOOD["explanation"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"risk": 0.8, "level": "high", "explanation": "cut off', "bedrock error: malformed reply"),
        ("I cannot help with that.", "bedrock error: malformed reply"),
        (
            json.dumps(dict(GOOD, recommendations=["only one"])),
            "bedrock error: invalid reply: recommendations",
        ),
        (json.dumps(dict(GOOD, risk="very")), "bedrock error: invalid reply: risk"),
        (json.dumps(dict(GOOD, explanation="  ")), "bedrock error: invalid reply: explanation"),
    ],
    ids=["truncated-json", "no-json", "one-action", "risk-not-a-number", "empty-explanation"],
)
def test_unusable_reply_falls_back_to_the_local_model(converse, scorable, text, reason):
    converse.reply(text)
    insight = score(scorable("stu_1"))
    assert insight.model == "local:health-v2"
    assert insight.fallback_reason.startswith(reason)
    assert insight.explanation.startswith(("High churn risk", "Medium churn risk"))


def test_out_of_range_values_are_cut_and_the_risk_stays_ours(converse, scorable):
    converse.reply(
        json.dumps(
            {
                "risk": 1.7,
                "level": "EXTREME",
                "explanation": "x" * 900,
                "recommendations": ["a", "b", "c", "d", ""],
            }
        )
    )
    insight = score(scorable("stu_1"))
    assert (insight.risk, insight.level) == (churn_probability(40), "high")
    assert len(insight.explanation) == 400
    assert insight.recommendations == ["a", "b", "c"]
    converse.reply(json.dumps(dict(GOOD, risk=-3, level=None)))
    insight = score(scorable("stu_2", health=85))  # at their usual: health 100
    assert (insight.risk, insight.level) == (churn_probability(100), "low")


def test_throttling_then_success_retries_with_backoff(converse, scorable, bedrock_settings, monkeypatch):
    bedrock_settings.INSIGHTS_BEDROCK_BACKOFF_SECONDS = 0.25
    waits: list[float] = []
    monkeypatch.setattr(bedrock.time, "sleep", waits.append)
    converse.error("ThrottlingException", 429)
    converse.error("ThrottlingException", 429)
    converse.reply(json.dumps(GOOD))
    insight = score(scorable("stu_1"))
    assert insight.model.startswith("bedrock:") and insight.fallback_reason == ""
    assert waits == [0.25, 0.5]
    converse.assert_no_pending_responses()


def test_throttling_past_the_retries_falls_back(converse, scorable, monkeypatch):
    monkeypatch.setattr(bedrock.time, "sleep", lambda s: None)
    for _ in range(3):
        converse.error("ThrottlingException", 429)
    insight = score(scorable("stu_1"))
    assert insight.model == "local:health-v2"
    assert insight.fallback_reason == "bedrock error: ThrottlingException"
    converse.assert_no_pending_responses()


def test_access_denied_is_not_retried(converse, scorable):
    converse.error("AccessDeniedException", 403)
    insight = score(scorable("stu_1"))
    assert insight.fallback_reason == "bedrock error: AccessDeniedException"
    converse.assert_no_pending_responses()


@pytest.fixture
def silent_peer():
    """A TCP server that accepts connections and never answers: a Bedrock that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=2)
    for conn in held:
        conn.close()
    server.close()


def test_timeout_falls_back_to_the_local_model(bedrock_settings, scorable, silent_peer):
    bedrock_settings.AWS_ENDPOINT_URL = silent_peer
    bedrock_settings.INSIGHTS_BEDROCK_TIMEOUT_SECONDS = 0.3
    bedrock.get_client.cache_clear()
    insight = score(scorable("stu_1"))
    assert insight.model == "local:health-v2"
    assert insight.fallback_reason == "bedrock error: ReadTimeoutError"


def test_embedded_eager_mode_never_calls_bedrock(converse, scorable, bedrock_settings):
    bedrock_settings.CELERY_TASK_ALWAYS_EAGER = True
    insight = score(scorable("stu_1"))  # the Stubber would fail the call: nothing is queued
    assert (insight.model, insight.fallback_reason) == ("local:health-v2", "")


def test_the_request_carries_the_prompt_features_and_local_score(converse, scorable):
    seen = {}

    def capture(params, **kwargs):
        seen.update(params)

    bedrock.get_client().meta.events.register("provide-client-params.bedrock-runtime.Converse", capture)
    converse.reply(json.dumps(GOOD))
    score(scorable("stu_1"))
    assert "JSON" in seen["system"][0]["text"]
    message = json.loads(seen["messages"][0]["content"][0]["text"])
    assert message["features"]["health"] == 40 and message["features"]["platform"] == 60  # capped
    assert 0 < message["local_model"]["risk"] < 1 and message["local_model"]["drivers"]


@pytest.fixture
def unanswered_port():
    """A TCP port that completes no new connection: its accept queue (backlog 0) is full and never
    drained, so the kernel drops further SYNs and connect() hangs (a blackholed endpoint)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    address = server.getsockname()
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(address)
        except BlockingIOError:
            pass
        fillers.append(filler)
    try:
        socket.create_connection(address, timeout=0.5).close()
    except TimeoutError:
        pass
    else:  # pragma: no cover - depends on the kernel
        pytest.skip("this kernel completes connections past a full backlog")
    yield f"http://127.0.0.1:{address[1]}"
    for filler in fillers:
        filler.close()
    server.close()


def test_connect_timeout_gives_up_and_falls_back(bedrock_settings, scorable, unanswered_port):
    bedrock_settings.AWS_ENDPOINT_URL = unanswered_port
    bedrock_settings.INSIGHTS_BEDROCK_CONNECT_TIMEOUT_SECONDS = 0.3
    bedrock_settings.INSIGHTS_BEDROCK_TIMEOUT_SECONDS = 60  # a read timeout would take a minute
    bedrock.reset()
    assert bedrock.get_client().meta.config.connect_timeout == 0.3
    insight = score(scorable("stu_1"))
    assert insight.model == "local:health-v2"
    assert insight.fallback_reason == "bedrock error: ConnectTimeoutError"


NO_CREDENTIAL_SOURCES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)


def test_without_aws_credentials_the_local_model_answers_and_one_warning_is_logged(
    fake_bedrock, bedrock_settings, scorable, monkeypatch, tmp_path, caplog
):
    for name in NO_CREDENTIAL_SOURCES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role lookup
    bedrock_settings.INSIGHTS_BEDROCK_MAX_PER_MINUTE = 1
    bedrock.reset()
    with caplog.at_level("WARNING", logger="insights.bedrock"):
        first, second = score(scorable("stu_1")), score(scorable("stu_2"))
        for insight in (first, second):
            assert insight.model == "local:health-v2"
            assert insight.fallback_reason == "bedrock unavailable: no AWS credentials found"
        assert fake_bedrock.calls == 0
        # Credentials appear (a role attached later): the periodic recheck finds them, no restart;
        # the budget was not spent while they were missing.
        monkeypatch.setattr(bedrock, "CREDENTIALS_RECHECK_SECONDS", 0)
        assert score(scorable("stu_3")).fallback_reason.startswith("bedrock unavailable")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        assert score(scorable("stu_4")).model.startswith("bedrock:")
    assert fake_bedrock.calls == 1
    warnings = [r for r in caplog.records if r.name == "insights.bedrock" and r.levelname == "WARNING"]
    assert len(warnings) == 1 and "no AWS credentials" in warnings[0].getMessage()  # not one per call
