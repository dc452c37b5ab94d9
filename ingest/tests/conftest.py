"""Fixtures of the ingest tests: a Kinesis stream in the shared moto server (a real HTTP hop)."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def kinesis_stream(settings, moto_endpoint, monkeypatch):
    """Switch the app to the kinesis backend on a fresh 2-shard stream in moto; yields (client, name)."""
    import boto3

    from ingest.streams import get_stream

    for var, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_SESSION_TOKEN", "testing"),
    ):
        monkeypatch.setenv(var, value)
    name = f"iops-test-{uuid.uuid4().hex[:12]}"
    settings.IOPS_STREAM = "kinesis"
    settings.KINESIS_STREAM_NAME = name
    settings.AWS_ENDPOINT_URL = moto_endpoint
    settings.AWS_REGION = "us-east-1"
    client = boto3.client("kinesis", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_stream(StreamName=name, ShardCount=2)
    get_stream.cache_clear()
    yield client, name
    get_stream.cache_clear()
    client.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
