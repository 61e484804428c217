"""The warnings etl_assets accepts, each with its reason, in one place.

Every other warning raised by our code fails the tests (setup.cfg turns DeprecationWarnings from
etl_assets into errors) and `python -W error -c "import etl_assets.definitions"`; setup.cfg's own
filters name only warnings raised inside third-party code.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

ACCEPTED: dict[str, tuple[type[Warning], str, str]] = {
    # name: (category, message regex, why we accept it)
    "backfill_policy": (
        dg.BetaWarning, ".*backfill_policy",
        "a Salesforce object asset backfills a range of folders in one run (BackfillPolicy.multi_run); "
        "the parameter is beta in Dagster 1.13 and would warn once per object at every import"),
    "sqlglotrs": (
        DeprecationWarning, "sqlglotrs is deprecated",
        "dagster-dbt 0.29 requires sqlglot[rs], whose sqlglotrs module warns about itself on import; "
        "sqlglot itself uses sqlglotc"),
}


@contextmanager
def accepting(name: str) -> Iterator[None]:
    """Within the block, the accepted warning `name` (a key of ACCEPTED) is not shown."""
    category, message, _why = ACCEPTED[name]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=message, category=category)
        yield
