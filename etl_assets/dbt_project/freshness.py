"""Notifications for missed freshness: the facts' 30-minute visibility.

Dagster's freshness daemon evaluates every asset's FreshnessPolicy and records each state
change (PASS/WARN/FAIL, shown in the UI); it sends nothing. This sensor reads those records
and publishes one notification per transition into FAIL (and one when the asset recovers)
through the project's Notifier, the same channel as failed loads and failed runs. The cursor
holds the last state notified per asset, so a FAIL that lasts is reported once.
"""

from __future__ import annotations

import json

import dagster as dg

from etl_assets.notifications import Notifier


def build_freshness_notification_sensor(keys: list[dg.AssetKey]) -> dg.SensorDefinition:
    @dg.sensor(
        name="notify_on_missed_freshness",
        description="Notifies when an asset with a freshness policy (the totesys facts) turns FAIL, and when "
                    "it is fresh again.",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def notify_on_missed_freshness(context: dg.SensorEvaluationContext, notifier: Notifier):
        notified = json.loads(context.cursor) if context.cursor else {}
        records = context.instance.get_freshness_state_records(keys)
        sent = []
        for key in keys:
            record = records.get(key)
            if record is None:
                continue
            # The state's value (PASS, WARN, FAIL, UNKNOWN): its enum is not in Dagster's public API.
            name, state = key.to_user_string(), record.freshness_state.value
            failing = state == "FAIL"
            recovered = state == "PASS" and notified.get(name) == "FAIL"
            if (failing and notified.get(name) != state) or recovered:
                notifier.publish({"table": name, "status": "FRESHNESS_" + state,
                                  "since": record.updated_at.isoformat(),
                                  "reason": "not built within its freshness window" if failing else "fresh again"},
                                 log=context.log)
                sent.append(name)
            notified[name] = state
        context.update_cursor(json.dumps(notified, sort_keys=True))
        if not sent:
            return dg.SkipReason("no freshness state changed to FAIL or back")
        return None

    return notify_on_missed_freshness
