"""Load notifications: an SNS topic when one is configured, the run log otherwise."""

from __future__ import annotations

import json

import boto3
import dagster as dg
from pydantic import Field, PrivateAttr


class Notifier(dg.ConfigurableResource):
    """Publishes one JSON message per load outcome (file, table, status, reason)."""

    topic_arn: str = Field(default="", description="SNS topic; empty means notifications are only logged.")
    region_name: str = "us-east-1"
    endpoint_url: str = ""

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
            self._client = boto3.client("sns", region_name=self.region_name, endpoint_url=self.endpoint_url or None)
        return self._client.publish(TopicArn=self.topic_arn, Subject=subject, Message=body)["MessageId"]
