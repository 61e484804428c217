"""boto3 clients for services beyond S3 (SNS, the Redshift Data API), made from the same settings
as dagster-aws' S3Resource (keys, session token, profile, retries), so every AWS call runs as the
identity the deployment configured rather than whatever boto3's default chain finds."""

from __future__ import annotations

import boto3
from dagster_aws.utils import (
    ResourceWithBoto3Configuration,
    construct_boto_client_retry_config,
)


def aws_client(config: ResourceWithBoto3Configuration, service: str, region_name: str | None = None,
               endpoint_url: str | None = None):
    """A `service` client with `config`'s credentials, in `region_name` (else `config`'s region) and at
    `endpoint_url` if set (`config`'s own endpoint is its service's: S3's is not SNS's)."""
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
