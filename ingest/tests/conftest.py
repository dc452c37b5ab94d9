"""Fixtures of the ingest tests: a moto server (a real HTTP hop to a fake Kinesis)."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


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
