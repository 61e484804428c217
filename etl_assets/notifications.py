"""Load notifications: an SNS topic when one is configured, the run log otherwise."""

from __future__ import annotations

import json

from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import Field, PrivateAttr

from etl_assets.aws import aws_client


class Notifier(ResourceWithBoto3Configuration):
    """Publishes one JSON message per outcome (a load, a failed run, missed freshness). Configured like
    dagster-aws' S3Resource (keys, session token, profile): give it the same credentials."""

    topic_arn: str = Field(default="", description="SNS topic; empty means notifications are only logged.")
    region_name: str | None = "us-east-1"
    endpoint_url: str | None = Field(default="", description="SNS endpoint; empty means AWS's.")

    _client = PrivateAttr(default=None)

    def publish(self, message: dict, log=None) -> str | None:
        """Send `message`; returns the SNS message id, or None when only logged."""
        body = json.dumps(message, default=str, sort_keys=True)
        subject = f"etl_assets {message.get('status', '')}: {message.get('table') or message.get('job', '')}"[:100]
        if not self.topic_arn:
            if log is not None:
                log.info(f"Notification (no SNS topic configured): {body}")
            return None
        if self._client is None:
            self._client = aws_client(self, "sns", endpoint_url=self.endpoint_url)
        return self._client.publish(TopicArn=self.topic_arn, Subject=subject, Message=body)["MessageId"]
