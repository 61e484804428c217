"""boto3 clients for services beyond S3 (SNS, the Redshift Data API), made from the same settings
as dagster-aws' S3Resource (keys, session token, profile, retries), so every AWS call runs as the
identity the deployment configured rather than whatever boto3's default chain finds."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import boto3
from dagster_aws.utils import (
    ResourceWithBoto3Configuration,
    construct_boto_client_retry_config,
)

# Clients made in this process, by service and settings. Building one reads and parses botocore's JSON models
# for its service again (a new boto3 session each time, as dagster-aws' get_client makes): ~25 ms of CPU, more
# than a request; Dagster builds the resources that hold them anew for every run and step. boto3 clients are
# thread-safe; a forked child (the pid is in the key) makes its own, as its parent's connections are not its.
_CLIENTS: dict[tuple, Any] = {}
_CLIENTS_LOCK = threading.Lock()
_MAX_CLIENTS = 64


def shared_client(key: tuple, make: Callable[[], Any]) -> Any:
    """The client `make()` builds, once per process for each `key` (the service and every setting it is built
    from: credentials, region, endpoint, retries) and the AWS_* variables boto3's default chain reads."""
    key = (os.getpid(), *key, *sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            if len(_CLIENTS) >= _MAX_CLIENTS:
                _CLIENTS.clear()
            client = _CLIENTS[key] = make()
        return client


def settings_key(config: ResourceWithBoto3Configuration) -> tuple:
    """Every setting of an AWS resource (dagster-aws' S3Resource, or a resource with its fields), as a key."""
    return tuple(sorted((name, repr(value)) for name, value in config.model_dump().items()))


def aws_client(config: ResourceWithBoto3Configuration, service: str, region_name: str | None = None,
               endpoint_url: str | None = None):
    """A `service` client with `config`'s credentials, in `region_name` (else `config`'s region) and at
    `endpoint_url` if set (`config`'s own endpoint is its service's: S3's is not SNS's); one per process
    for the same settings (`shared_client`)."""
    def make():
        session = boto3.session.Session(profile_name=config.profile_name)
        return session.client(
            service,
            region_name=region_name or config.region_name,
            endpoint_url=endpoint_url or None,
            use_ssl=config.use_ssl,
            verify=config.verify,
            aws_access_key_id=config.aws_access_key_id,
            aws_secret_access_key=config.aws_secret_access_key,
            aws_session_token=config.aws_session_token,
            config=construct_boto_client_retry_config(config.max_attempts),
        )

    return shared_client((service, region_name, endpoint_url, settings_key(config)), make)


def s3_client(resource) -> Any:
    """dagster-aws' S3 client for an S3Resource (`get_client`), one per process for the same settings."""
    return shared_client(("s3", settings_key(resource)), resource.get_client)
