"""The secret key of `hash` column policies, as the resource the object assets read it from.

The key is an `EnvVar` (ETL_ASSETS_HASH_KEY), resolved by Dagster when a run starts and shown in the
UI as the variable's name, never its value. It is asked for only when the catalog has a `hash` policy
or rule, so a deployment that hashes nothing needs no key; one that does cannot start a run without
it (Dagster's message names the variable). docs/personal-data.md says how to choose and rotate it.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from etl_assets.landing.column_policies import HASH_KEY_ENV, hash_key
from etl_assets.salesforce.catalog import SalesforceObject


class HashKey(dg.ConfigurableResource):
    """The HMAC key of `hash` column policies (ETL_ASSETS_HASH_KEY)."""

    value: str | None = None

    def for_object(self, obj: SalesforceObject) -> bytes | None:
        """The key as bytes if `obj` may hash a column, else None; a short key is refused, naming the object."""
        if obj.policies is None or not obj.policies.may_hash:
            return None
        return hash_key(self.value, obj.api_name)


def hash_key_resource(objects: Iterable[SalesforceObject]) -> HashKey:
    """The resource for these objects: reading the environment only if one of them may hash."""
    if any(obj.policies is not None and obj.policies.may_hash for obj in objects):
        return HashKey(value=dg.EnvVar(HASH_KEY_ENV))
    return HashKey()
