"""The one module that talks to Amazon Bedrock: a Converse call for a churn/burnout judgement.

Every failure (network, timeout, throttling past our retries, AWS error, a reply we cannot parse
or validate) becomes BedrockError; the caller falls back to the local model and records why.
Recommended BEDROCK_MODEL_ID: "us.anthropic.claude-haiku-4-5-20251001-v1:0" (Claude Haiku 4.5, US
cross-region inference profile; "eu."/"global." prefixes elsewhere).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from django.conf import settings
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

logger = logging.getLogger(__name__)

RECOMMENDED_MODEL_ID = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
EXPLANATION_MAX = 400
THROTTLING_CODES = {"ThrottlingException", "TooManyRequestsException", "ServiceUnavailableException"}

SYSTEM_PROMPT = (
    "You explain the risk that a student of a tutoring marketplace stops using it (churn), or that a "
    "tutor burns out, to an operations team. You receive the entity's features and our score (risk, "
    "level and the drivers behind them); the score is fixed. Reply with ONLY one JSON object, no prose, "
    'no code fence, exactly these keys: {"risk": the given risk, "level": the given level, '
    '"explanation": plain English, at most 400 characters, quoting only figures given in the features, '
    '"recommendations": 2 or 3 short concrete actions for the operations team, in proportion to the '
    "level (no urgent calls for a low risk)}. Never invent a figure that is not in the features; say a "
    "value is unknown when it is null."
)


class BedrockError(Exception):
    """Bedrock did not give a usable answer; str() is the short reason recorded on the insight."""


class Reply(BaseModel):
    """A validated model answer: risk clamped to 0–1, level derived from risk when not valid."""

    risk: float
    level: Any = ""
    explanation: str = Field(min_length=1)
    recommendations: list[str]

    @field_validator("risk", mode="before")
    @classmethod
    def _clamp(cls, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("risk must be a number")
        number = float(value)
        if number != number:  # NaN
            raise ValueError("risk must be a number")
        return min(1.0, max(0.0, number))

    @field_validator("explanation")
    @classmethod
    def _bound(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("explanation is empty")
        return value if len(value) <= EXPLANATION_MAX else value[: EXPLANATION_MAX - 1].rstrip() + "…"

    @field_validator("recommendations")
    @classmethod
    def _actions(cls, value: list[str]) -> list[str]:
        actions = [" ".join(str(v).split()) for v in value if isinstance(v, str) and v.strip()]
        if len(actions) < 2:
            raise ValueError("at least 2 non-empty recommendations are required")
        return [a[:300] for a in actions[:3]]

    @model_validator(mode="after")
    def _level(self) -> Reply:
        from insights.local_model import level_for

        level = self.level.strip().lower() if isinstance(self.level, str) else ""
        self.level = level if level in {"low", "medium", "high"} else level_for(self.risk)
        return self


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def _json_object(text: str) -> dict[str, Any]:
    """The first JSON object in the reply: bare, inside a ``` fence, or surrounded by prose."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for start in [i for i, ch in enumerate(candidate) if ch == "{"]:
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    raise BedrockError("malformed reply: no JSON object")


def parse_reply(text: str) -> Reply:
    data = _json_object(text)
    try:
        return Reply.model_validate(data)
    except ValidationError as exc:
        fields = ", ".join(sorted({".".join(str(p) for p in e["loc"]) or "reply" for e in exc.errors()}))
        raise BedrockError(f"invalid reply: {fields}") from None


@lru_cache(maxsize=1)
def get_session():
    """The boto3 session of the Bedrock client and of the credentials check (standard chain: env,
    shared files, SSO, container or instance role)."""
    import boto3

    return boto3.session.Session(region_name=settings.AWS_REGION)


@lru_cache(maxsize=1)
def get_client():
    from botocore.config import Config

    # Our retry policy is the only one (throttling below, fallback otherwise): botocore's is off.
    config = Config(
        region_name=settings.AWS_REGION,
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=settings.INSIGHTS_BEDROCK_CONNECT_TIMEOUT_SECONDS,
        read_timeout=settings.INSIGHTS_BEDROCK_TIMEOUT_SECONDS,
    )
    return get_session().client(
        "bedrock-runtime", endpoint_url=settings.AWS_ENDPOINT_URL or None, config=config
    )


# Missing credentials are looked up again after this long (a role may be attached later).
CREDENTIALS_RECHECK_SECONDS = 300
NO_CREDENTIALS = "bedrock unavailable: no AWS credentials found"
_credentials_lock = threading.Lock()
_credentials: dict[str, Any] = {"reason": None, "checked": 0.0, "warned": False}


def unavailable_reason() -> str:
    """The fallback reason to record when boto3 finds no AWS credentials, else an empty string.
    Looked up once per process (re-checked every CREDENTIALS_RECHECK_SECONDS while missing); the
    first miss logs one WARNING, later calls do not."""
    with _credentials_lock:
        reason = _credentials["reason"]
        if reason == "" or (
            reason is not None and time.monotonic() - _credentials["checked"] < CREDENTIALS_RECHECK_SECONDS
        ):
            return reason
        try:
            found = get_session().get_credentials() is not None
            reason = "" if found else NO_CREDENTIALS
        except Exception as exc:  # noqa: BLE001 - a broken config file is "no credentials" too
            reason = f"{NO_CREDENTIALS} ({exc.__class__.__name__})"
        _credentials.update(reason=reason, checked=time.monotonic())
        if reason and not _credentials["warned"]:
            _credentials["warned"] = True
            logger.warning(
                "BEDROCK_MODEL_ID is set but boto3 finds no AWS credentials: churn insights use the "
                "local model",
                extra={"model_id": settings.BEDROCK_MODEL_ID, "reason": reason},
            )
        return reason


def reset() -> None:
    """Forget the session, client and credentials check (settings or environment changed: tests)."""
    with _credentials_lock:
        _credentials.update(reason=None, checked=0.0, warned=False)
    get_client.cache_clear()
    get_session.cache_clear()


def _message(*, entity_type: str, entity_id: str, features: dict[str, float], local: Any) -> str:
    return json.dumps(
        {
            "entity": {"type": entity_type, "id": entity_id},
            "assess": "churn risk" if entity_type == "student" else "burnout risk",
            "features": features,
            "local_model": {
                "risk": local.risk,
                "level": local.level,
                "drivers": local.drivers,
            },
        },
        separators=(",", ":"),
    )


def converse_score(
    *,
    entity_type: str,
    entity_id: str,
    features: dict[str, float],
    local: Any,
    model_id: str,
    sleep: Callable[[float], None] | None = None,
) -> Reply:
    """One judgement from Bedrock, retrying only throttling (bounded, exponential backoff)."""
    from botocore.exceptions import BotoCoreError, ClientError

    request = {
        "modelId": model_id,
        "system": [{"text": SYSTEM_PROMPT}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "text": _message(
                            entity_type=entity_type, entity_id=entity_id, features=features, local=local
                        )
                    }
                ],
            }
        ],
        "inferenceConfig": {"maxTokens": 400, "temperature": 0.0},
    }
    retries = settings.INSIGHTS_BEDROCK_THROTTLE_RETRIES
    for attempt in range(retries + 1):
        started = time.monotonic()
        try:
            response = get_client().converse(**request)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "ClientError")
            if code in THROTTLING_CODES and attempt < retries:
                delay = settings.INSIGHTS_BEDROCK_BACKOFF_SECONDS * (2**attempt)
                logger.info("bedrock throttled, retrying", extra={"attempt": attempt + 1, "delay_s": delay})
                (sleep or time.sleep)(delay)
                continue
            raise BedrockError(code) from None
        except BotoCoreError as exc:  # timeouts, connection errors, missing credentials
            raise BedrockError(exc.__class__.__name__) from None
        try:
            blocks = response["output"]["message"]["content"]
            text = "".join(b.get("text", "") for b in blocks)
        except (KeyError, TypeError):
            raise BedrockError("malformed reply: no message") from None
        reply = parse_reply(text)
        logger.info(
            "bedrock scored",
            extra={
                "entity_id": entity_id,
                "ms": round((time.monotonic() - started) * 1000),
                "input_tokens": response.get("usage", {}).get("inputTokens"),
                "output_tokens": response.get("usage", {}).get("outputTokens"),
            },
        )
        return reply
    raise BedrockError("ThrottlingException")  # pragma: no cover - the loop always returns or raises
