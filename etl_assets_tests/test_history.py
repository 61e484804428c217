"""History mode (issue 28): the versions table `salesforce_history.<object>`, on DuckDB and the real PostgreSQL.

The folders are written here, small and exact. The property test loads a random set of folders
(differentials and full backups that lack some Ids, records deleted and re-appearing, the same version
in several folders, equal SystemModstamps, soft deletes, an Id twice in one file) in random orders with
repeats, through the Salesforce staging and the Warehouse's load (streamed, merged by chunk, or staged
first, as each engine chooses; some loads staged on purpose), and requires the versions table and the
current table to equal those of loading every folder once in date order. Other tests pin the intervals
themselves, and the Dagster asset path.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import random
from pathlib import Path

import pytest

from etl_assets.salesforce.catalog import load_catalog, parse_catalog
from etl_assets.salesforce.partitions import full_backup_date
from etl_assets.salesforce.staging import SourceFile, stage_object, stream_object
from etl_assets.samples.salesforce import salesforce_id
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets.warehouse.history import as_of_query, history_spec
from etl_assets.warehouse.postgres import PostgresWarehouse
from etl_assets_tests.helpers import engine_of, table_digest

UTC = dt.timezone.utc
HEADER = "Id,IsDeleted,SystemModstamp,Name"
ACCOUNT = load_catalog()["Account"]
HISTORY = "salesforce_history"
IDS = [salesforce_id("001", n) for n in range(1, 9)]


@pytest.fixture(params=["duckdb", "postgres", "postgres18"])
def engine(request, tmp_path):
    """Each engine, and PostgreSQL 18 too: there a busy chunk's merge keeps its versions itself
    (`RETURNING old`), where 15 probes every chunk before merging it."""
    return engine_of(request, tmp_path)


def stamp(day: int, hour: int = 8, minute: int = 0) -> str:
    return (dt.datetime(2024, 6, 1, tzinfo=UTC) + dt.timedelta(days=day - 1, hours=hour, minutes=minute)
            ).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def write_folder(root: Path, folder: str, rows: list[tuple], api_name: str = "Account") -> None:
    """One CSV of (Id, SystemModstamp, Name[, IsDeleted]) rows."""
    directory = root / "backup" / folder / api_name
    directory.mkdir(parents=True, exist_ok=True)
    lines = [HEADER] + [f"{r[0]},{'true' if len(r) > 3 and r[3] else 'false'},{r[1]},{r[2]}" for r in rows]
    (directory / f"{api_name}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def load_folder(warehouse, root: Path, folder: str, staged: bool = False, obj=ACCOUNT):
    """What the object's asset does for one folder: its files as a batch (a full folder's a snapshot),
    streamed into the load or, with `staged`, staged to Parquet first."""
    directory = root / "backup" / folder / obj.api_name
    paths = sorted(directory.glob("*.csv")) if directory.is_dir() else []
    files = [SourceFile(f"backup/{folder}/{obj.api_name}/{p.name}", p) for p in paths]
    batch, _ = (stage_object if staged else stream_object)(obj, files, partition=folder)
    batch.full_snapshot_date = full_backup_date(folder) if files else None
    try:
        return warehouse.load(batch)
    finally:
        batch.discard()


def versions(warehouse, table: str = "account") -> list[tuple]:
    """(id, valid_from, valid_to, is_current, deleted_at, name, partition), ordered."""
    rows = warehouse.query(f'SELECT id, _valid_from, _valid_to, _is_current, _deleted_at, name, _source_partition '
                           f'FROM {HISTORY}."{table}" ORDER BY id, _valid_from')

    def utc(value):
        return value.astimezone(UTC) if value is not None else None
    return [(i, utc(f), utc(t), bool(c), utc(d), n, p) for i, f, t, c, d, n, p in rows]


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


# The intervals themselves.

def test_versions_get_intervals_and_a_late_folder_goes_in_the_middle(engine, tmp_path):
    a, b = IDS[:2]
    write_folder(tmp_path, "20240601_Differential", [(a, stamp(1), "a1"), (b, stamp(1), "b1")])
    write_folder(tmp_path, "20240602_Differential", [(a, stamp(2), "a2")])
    write_folder(tmp_path, "20240603_Differential", [(a, stamp(3), "a3"), (b, stamp(3), "b3")])
    warehouse = engine()
    first = load_folder(warehouse, tmp_path, "20240601_Differential")
    assert first.versions_added == 2
    load_folder(warehouse, tmp_path, "20240603_Differential")
    late = load_folder(warehouse, tmp_path, "20240602_Differential")  # arrives last, belongs in the middle
    assert late.versions_added == 1
    assert versions(warehouse) == [
        (a, at(stamp(1)), at(stamp(2)), False, None, "a1", "20240601_Differential"),
        (a, at(stamp(2)), at(stamp(3)), False, None, "a2", "20240602_Differential"),
        (a, at(stamp(3)), None, True, None, "a3", "20240603_Differential"),
        (b, at(stamp(1)), at(stamp(3)), False, None, "b1", "20240601_Differential"),
        (b, at(stamp(3)), None, True, None, "b3", "20240603_Differential"),
    ]
    again = load_folder(warehouse, tmp_path, "20240602_Differential")
    assert again.versions_added == 0
    assert len(versions(warehouse)) == 5


def test_a_full_backup_closes_the_last_version_and_a_later_one_holding_the_record_reopens_it(engine, tmp_path):
    """Item 6 too: the record deleted is the most recently changed one of a quiet object; the full
    backup's own date (with the 14-hour margin) is its evidence, not the newest version among its rows."""
    a, b = IDS[:2]
    write_folder(tmp_path, "20240601_Differential", [(a, stamp(1, 6), "a1"), (b, stamp(1, 7), "b1")])
    write_folder(tmp_path, "20240605_Full", [(a, stamp(1, 6), "a1")])  # b, the newest change, is gone
    write_folder(tmp_path, "20240606_Full", [(a, stamp(1, 6), "a1"), (b, stamp(1, 7), "b1")])  # restored
    warehouse = engine()
    load_folder(warehouse, tmp_path, "20240601_Differential")
    load_folder(warehouse, tmp_path, "20240605_Full")
    deleted = dt.datetime(2024, 6, 5, tzinfo=UTC)
    assert versions(warehouse) == [  # a version seen again: its latest appearance, as the current table's row
        (a, at(stamp(1, 6)), None, True, None, "a1", "20240605_Full"),
        (b, at(stamp(1, 7)), deleted, False, deleted, "b1", "20240601_Differential"),
    ]
    assert warehouse.query('SELECT _deleted_in_source_at FROM salesforce.account WHERE id = ?'
                           if isinstance(warehouse, DuckDBWarehouse) else
                           'SELECT _deleted_in_source_at FROM salesforce.account WHERE id = %s', [b])[0][0] == deleted
    load_folder(warehouse, tmp_path, "20240606_Full")
    assert [v[2:5] for v in versions(warehouse)] == [(None, True, None)] * 2


def test_a_soft_deleted_last_version_is_closed_at_its_own_time_and_as_of_leaves_it_out(engine, tmp_path):
    a, b = IDS[:2]
    write_folder(tmp_path, "20240601_Differential", [(a, stamp(1), "a1"), (b, stamp(1), "b1")])
    write_folder(tmp_path, "20240603_Differential", [(a, stamp(3), "a1", True)])  # to the recycle bin
    warehouse = engine()
    for folder in ("20240603_Differential", "20240601_Differential"):
        load_folder(warehouse, tmp_path, folder)
    assert versions(warehouse)[:2] == [
        (a, at(stamp(1)), at(stamp(3)), False, None, "a1", "20240601_Differential"),
        (a, at(stamp(3)), at(stamp(3)), False, at(stamp(3)), "a1", "20240603_Differential"),
    ]
    spec = history_spec(ACCOUNT.table_spec())
    dialect = "duckdb" if isinstance(warehouse, DuckDBWarehouse) else "postgres"

    def as_of(when) -> list:
        return sorted(r[:1] for r in warehouse.query(as_of_query(ACCOUNT.table_spec(), when, dialect, ["id", "name"])))
    assert spec.schema == HISTORY
    assert as_of(dt.date(2024, 6, 1)) == []  # before any version
    assert as_of(at(stamp(2))) == [(a,), (b,)]
    assert as_of(at(stamp(3))) == [(b,)]
    assert as_of("2024-06-10") == [(b,)]
    # dbt's as_of macro writes the same condition
    for when in (stamp(2), stamp(3)):
        condition = dbt_as_of("u", f"CAST('{when}' AS TIMESTAMPTZ)")
        assert sorted(warehouse.query(f"SELECT u.id FROM {HISTORY}.account AS u WHERE {condition}")) == as_of(at(when))


def dbt_as_of(relation: str, date_expr: str) -> str:
    """dbt/macros/as_of.sql rendered as dbt renders it (Jinja)."""
    import jinja2

    macro = (Path(__file__).parents[1] / "dbt" / "macros" / "as_of.sql").read_text()
    return jinja2.Environment().from_string(macro + "{{ as_of(r, d) }}").render(r=relation, d=date_expr)


@pytest.mark.parametrize("dialect", ["redshift", "postgres", "duckdb"])
def test_the_as_of_query_parses_in_each_dialect(dialect):
    import sqlglot
    from sqlglot.errors import ErrorLevel

    sql = as_of_query(load_catalog()["Task"].table_spec(), "2024-03-01", dialect)
    assert as_of_query(load_catalog()["Task"], dt.date(2024, 3, 1), dialect) == sql
    sqlglot.parse_one(sql, read=dialect, error_level=ErrorLevel.RAISE)
    assert '"salesforce_history"."task"' in sql and "2024-03-01 00:00:00" in sql
    with pytest.raises(ValueError):
        as_of_query(load_catalog()["Task"].table_spec(), "2024-03-01", "sqlite")


def test_history_off_in_the_catalog_keeps_no_versions(engine, tmp_path):
    document = {"common_columns": {"Id": {"type": "id", "nullable": False}, "IsDeleted": "boolean",
                                   "SystemModstamp": "datetime"},
                "objects": {"Account": {"history": False, "columns": {"Name": "string"}}}}
    obj = parse_catalog(document)["Account"]
    assert not obj.keeps_history and not obj.table_spec().history
    write_folder(tmp_path, "20240601_Differential", [(IDS[0], stamp(1), "a1")])
    warehouse = engine()
    result = load_folder(warehouse, tmp_path, "20240601_Differential", obj=obj)
    assert result.inserted == 1 and result.versions_added == 0
    assert not warehouse.has_table(HISTORY, "account")
    assert parse_catalog(document | {"objects": {"Account": {"columns": {"Name": "string"}}}},
                         history=False)["Account"].history is False  # the deployment default
    assert parse_catalog(document | {"objects": {"Account": {"columns": {"Name": "string"}}}},
                         history=True)["Account"].keeps_history


# Any order, any number of times.

def random_scenario(rng: random.Random) -> dict[str, list[tuple]]:
    """Folder -> rows, built day by day from a state of the records: differentials change a few records
    (sometimes to the recycle bin, sometimes re-sending a version already sent, or an Id twice in one
    file); full backups hold every live record but drop some (hard deletes) and bring back some dropped
    ones at the version they had (restored from the recycle bin); stamps are drawn from few values, so
    equal SystemModstamps occur across records."""
    state: dict[str, tuple] = {}  # id -> (stamp, name, is_deleted) of the live record
    gone: dict[str, tuple] = {}  # hard-deleted records, as they were
    folders = {}
    for day in range(1, 8):
        full = rng.random() < 0.4
        folder = f"202406{day:02d}_{'Full' if full else 'Differential'}"
        rows = []
        for id_ in rng.sample(IDS, rng.randint(1, 4)):  # changes during the day before
            if id_ in gone and rng.random() < 0.5:
                continue
            previous = state.get(id_) or gone.pop(id_, None)
            when = stamp(day - 1 if day > 1 else 1, rng.choice([2, 8, 8, 20]))
            if previous and previous[0] >= when:
                when = previous[0]  # the same version again (a differential re-sending it)
            version = (when, f"{id_[-3:]}@{when[8:13]}", rng.random() < 0.15)
            state[id_] = version
            if not full:
                rows.append((id_, *version[:2], version[2]))
        if full:
            for id_, version in list(state.items()):
                if rng.random() < 0.2:
                    gone[id_] = state.pop(id_)  # hard-deleted before the snapshot
            for id_, version in list(gone.items()):
                if rng.random() < 0.3:
                    state[id_] = gone.pop(id_)  # restored
            rows = [(id_, v[0], v[1], v[2]) for id_, v in sorted(state.items())]
        elif rows and rng.random() < 0.3:
            id_, when, name, deleted = rows[0]
            earlier = stamp(1, 1)
            if earlier < when:
                rows.append((id_, earlier, name + " earlier", False))  # an Id twice in one file
        folders[folder] = rows
    return folders


def loaded_in_date_order(engine, root: Path, rng: random.Random) -> tuple[list[str], object, tuple]:
    """A random scenario's folders written under `root` and loaded once each in date order into a new
    warehouse: (the folders, the warehouse, the digests of its versions and its object table)."""
    scenario = random_scenario(rng)
    for folder, rows in scenario.items():
        write_folder(root, folder, rows)
    folders = sorted(scenario)
    reference = engine()
    for folder in folders:
        load_folder(reference, root, folder)
    return folders, reference, (table_digest(reference, "account", HISTORY), table_digest(reference, "account"))


@pytest.mark.parametrize("seed", range(3))
def test_any_order_and_any_repeats_give_the_history_of_one_load_in_date_order(engine, tmp_path, seed):
    rng = random.Random(seed)
    folders, reference, expected = loaded_in_date_order(engine, tmp_path, rng)
    assert len(expected[0]) >= len(folders)
    assert sum(1 for v in versions(reference) if v[4] is not None) >= 1 or seed, "no deletion in the scenario"
    for trial in range(4):
        order = folders[:]
        rng.shuffle(order)
        order += rng.sample(folders, 3)  # repeats, anywhere
        rng.shuffle(order)
        warehouse = engine()
        for folder in order:
            load_folder(warehouse, tmp_path, folder, staged=rng.random() < 0.3)
        got = (table_digest(warehouse, "account", HISTORY), table_digest(warehouse, "account"))
        assert got == expected, f"seed {seed}, order {order}"
        check_invariants(versions(warehouse))


def check_invariants(rows: list[tuple]) -> None:
    """Per record: each version's interval ends where the next starts; only the last may be current
    or deleted; a deleted last version is closed no earlier than it starts."""
    for id_, group in itertools.groupby(rows, key=lambda r: r[0]):
        group = list(group)
        for version, following in zip(group, group[1:]):
            assert version[2] == following[1] and not version[3] and version[4] is None, (id_, group)
        last = group[-1]
        assert last[3] == (last[2] is None), (id_, last)
        assert (last[4] is None) == last[3], (id_, last)
        if last[4] is not None:
            assert last[2] >= last[1]


# Redshift: the same steps, parsed as Redshift and run on PostgreSQL as today's merge is.

def test_the_redshift_plan_keeps_versions_parses_as_redshift_and_runs_on_postgres(postgres_database, s3_endpoint,
                                                                                   s3_bucket):
    from dagster_aws.s3 import S3Resource

    from etl_assets.warehouse.redshift import RedshiftWarehouse
    from etl_assets.warehouse.redshift_sessions import render
    from etl_assets_tests.conftest import S3_CREDENTIALS
    from etl_assets_tests.test_redshift import SPEC, assert_redshift_sql, batch_of, run_plan_on_postgres

    _, bucket = s3_bucket
    redshift = RedshiftWarehouse(s3=S3Resource(endpoint_url=s3_endpoint, **S3_CREDENTIALS), staging_bucket=bucket,
                                 iam_role_arn="arn:aws:iam::123456789012:role/copy")
    spec = dataclasses.replace(SPEC, track_deletions=True, history=True)
    newer = batch_of([("A", 3, "a3"), ("B", 4, "b4")], partition="P2", spec=spec)
    older = batch_of([("A", 1, "a1"), ("A", 2, "a2"), ("C", 1, "c1")], partition="P1", spec=spec)  # A repeats
    full = batch_of([("A", 3, "a3")], partition="P3", spec=spec)  # B and C are gone
    full.full_snapshot_date = dt.date(2024, 5, 10)
    for batch in (newer, older, full):
        statements = redshift.plan(batch, {}).statements()
        assert any(s.sql.startswith('INSERT INTO "salesforce_superseded"."note__c"') for s in statements)
        assert any(s.sql.startswith('CREATE VIEW "salesforce_history"."note__c"') and
                   s.sql.endswith(" WITH NO SCHEMA BINDING") for s in statements)
        for step in statements:
            assert_redshift_sql(render(step.sql, step.params))
    for batch in (newer, older, older, full):
        run_plan_on_postgres(redshift, postgres_database, batch)
    warehouse = PostgresWarehouse(host=postgres_database["host"], port=postgres_database["port"],
                                  user=postgres_database["user"], database=postgres_database["database"])
    rows = warehouse.query('SELECT id, EXTRACT(DAY FROM _valid_from)::int, EXTRACT(DAY FROM _valid_to)::int, '
                           '_is_current, EXTRACT(DAY FROM _deleted_at)::int, body '
                           'FROM salesforce_history.note__c ORDER BY id, _valid_from')
    assert rows == [("A", 1, 2, False, None, "a1"), ("A", 2, 3, False, None, "a2"), ("A", 3, None, True, None, "a3"),
                    ("B", 4, 10, False, 10, "b4"), ("C", 1, 10, False, 10, "c1")]


# The asset: what `make run` and the sensor's runs do.

def test_the_object_asset_keeps_versions_and_reports_them(engine, tmp_path):
    import dagster as dg

    from etl_assets.landing.zone import LocalLandingZone
    from etl_assets_tests.helpers import materialize_folders, resources

    a = IDS[0]
    write_folder(tmp_path, "20240601_Differential", [(a, stamp(1), "a1")])
    write_folder(tmp_path, "20240602_Differential", [(a, stamp(2), "a2")])
    warehouse = engine()
    results = materialize_folders(["20240602_Differential", "20240601_Differential"],
                                  resources(LocalLandingZone(root=str(tmp_path)), warehouse),
                                  instance=dg.DagsterInstance.ephemeral(), objects=["Account"])
    metadata = [r.get_asset_materialization_events()[0].materialization.metadata for r in results]
    assert [m["versions_added"].value for m in metadata] == [1, 1]
    assert metadata[-1]["versions"].value == 2 and metadata[-1]["history_table"].value == "salesforce_history.account"
    assert [v[1:4] for v in versions(warehouse)] == [(at(stamp(1)), at(stamp(2)), False), (at(stamp(2)), None, True)]


def test_loading_the_folders_again_with_history_on_builds_the_versions_history_always_had(engine, tmp_path):
    """The backfill of a warehouse that kept no history: loads are idempotent merges, so loading the
    folders still in the landing zone again (any order; a Dagster backfill of the object assets) leaves
    the object table as it was and builds the versions table a warehouse with history always on has."""
    folders, _, expected = loaded_in_date_order(engine, tmp_path, random.Random(11))
    without = dataclasses.replace(ACCOUNT, history=False)
    warehouse = engine()
    for folder in folders:
        load_folder(warehouse, tmp_path, folder, obj=without)
    assert not warehouse.has_table(HISTORY, "account")
    before = table_digest(warehouse, "account")
    for folder in reversed(folders):
        load_folder(warehouse, tmp_path, folder)
    assert table_digest(warehouse, "account") == before == expected[1]
    assert table_digest(warehouse, "account", HISTORY) == expected[0]


def test_a_column_new_in_a_later_folder_is_added_to_the_versions_table_too(engine, tmp_path):
    a = IDS[0]
    write_folder(tmp_path, "20240601_Differential", [(a, stamp(1), "a1")])
    directory = tmp_path / "backup" / "20240602_Differential" / "Account"
    directory.mkdir(parents=True)
    (directory / "Account.csv").write_text(f"{HEADER},Brand_New__c\n{a},false,{stamp(2)},a2,shiny\n", encoding="utf-8")
    warehouse = engine()
    load_folder(warehouse, tmp_path, "20240601_Differential")
    result = load_folder(warehouse, tmp_path, "20240602_Differential")
    assert "brand_new__c" in result.added_columns
    assert sorted(warehouse.query(f'SELECT name, brand_new__c FROM {HISTORY}.account'), key=str) == \
        [("a1", None), ("a2", "shiny")]


def test_etl_assets_sql_as_of_prints_a_query_that_answers_on_the_engine(engine, tmp_path):
    """`etl-assets sql --as-of DATE --object X` prints the as-of query: pasted into the warehouse, it gives
    each record as it was then (a record changed later shows its old name; one deleted before is gone)."""
    from click.testing import CliRunner

    from etl_assets import cli
    from etl_assets.salesforce.catalog import load_catalog

    account = load_catalog()["Account"]
    a, b = IDS[:2]
    write_folder(tmp_path, "20240601_Differential", [(a, stamp(1), "a1"), (b, stamp(1), "b1")])
    write_folder(tmp_path, "20240603_Differential", [(a, stamp(3), "a2"), (b, stamp(3), "b1", True)])
    warehouse = engine()
    for folder in ("20240603_Differential", "20240601_Differential"):
        load_folder(warehouse, tmp_path, folder, obj=account)
    target = "duckdb" if isinstance(warehouse, DuckDBWarehouse) else "postgres"

    def as_of(when: str) -> list[tuple]:
        result = CliRunner().invoke(cli.cli, ["sql", "--as-of", when, "--object", "account", "--target", target],
                                    prog_name="etl-assets")
        assert result.exit_code == 0, result.output
        comment, query = result.output.strip().split("\n", 1)
        assert comment.startswith(f"-- Account as of {when} (UTC) on {target}")
        return sorted((row[0], row[-1]) for row in warehouse.query(
            f"SELECT id, name FROM ({query.rstrip(';')}) AS as_of"))

    assert as_of("2024-06-02") == [(a, "a1"), (b, "b1")]
    assert as_of("2024-06-04") == [(a, "a2")]
    assert as_of("2024-05-01") == []


def test_a_versions_table_of_the_earlier_layout_is_migrated_by_the_next_load(engine, tmp_path):
    """An earlier release kept every version, the current ones too, in the table `salesforce_history.
    <object>` (no superseded table): the next load moves its superseded versions and replaces it with
    the view, giving the history of a warehouse that always had the view."""
    a, b = IDS[:2]
    write_folder(tmp_path, "20240601_Differential", [(a, stamp(1), "a1"), (b, stamp(1), "b1")])
    write_folder(tmp_path, "20240602_Differential", [(a, stamp(2), "a2")])
    write_folder(tmp_path, "20240603_Differential", [(a, stamp(3), "a3"), (b, stamp(3), "b3", True)])
    folders = ["20240601_Differential", "20240602_Differential", "20240603_Differential"]
    reference = engine()
    for folder in folders:
        load_folder(reference, tmp_path, folder)
    expected = table_digest(reference, "account", HISTORY)
    warehouse = engine()
    for folder in folders[:2]:
        load_folder(warehouse, tmp_path, folder)
    with warehouse.session() as session:  # the earlier layout: one table of every version
        session.execute(f"CREATE TABLE {HISTORY}.account_old AS SELECT * FROM {HISTORY}.account")
        session.execute(f"DROP VIEW {HISTORY}.account")
        session.execute(f"ALTER TABLE {HISTORY}.account_old RENAME TO account")
        session.execute("DROP SCHEMA salesforce_superseded CASCADE")
    assert len(versions(warehouse)) == 3
    result = load_folder(warehouse, tmp_path, folders[2])
    assert result.versions_added == 2
    assert table_digest(warehouse, "account", HISTORY) == expected
    assert [v[1:5] for v in versions(warehouse) if v[0] == b] == [
        (at(stamp(1)), at(stamp(3)), False, None), (at(stamp(3)), at(stamp(3)), False, at(stamp(3)))]
