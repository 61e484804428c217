"""The totesys tables as extraction sees them: key, columns and their types.

schema.sql creates them in the source; this module says how each column lands
(in the Parquet snapshot and in raw_totesys). A test checks the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from etl_assets.warehouse.spec import Column, ColumnType, TableSpec

RAW_SCHEMA = "raw_totesys"
VERSION_COLUMN = "last_updated"
# The facts' sources: every extracted version is also appended to raw_totesys.<table>_history.
HISTORY_TABLES = ("sales_order", "purchase_order", "payment")

# Source type -> (Parquet snapshot type, warehouse column type). Snapshots keep the source's
# exact types (decimals, booleans); the warehouse has no decimal type, so money lands as
# DOUBLE and dbt casts it back to NUMERIC(10, 2) in staging.
SOURCE_TYPES = {
    "int": (pa.int64(), ColumnType.INTEGER),
    "text": (pa.string(), ColumnType.STRING),
    "money": (pa.decimal128(10, 2), ColumnType.FLOAT),
    "bool": (pa.bool_(), ColumnType.BOOLEAN),
    "date": (pa.date32(), ColumnType.DATE),
    # Totesys stores UTC wall-clock times without a zone.
    "timestamp": (pa.timestamp("us", tz="UTC"), ColumnType.DATETIME),
}


@dataclass(frozen=True)
class TotesysTable:
    name: str
    description: str
    columns: tuple[tuple[str, str], ...]  # (name, source type); created_at/last_updated added

    @property
    def primary_key(self) -> str:
        return self.columns[0][0]

    @property
    def all_columns(self) -> tuple[tuple[str, str], ...]:
        return self.columns + (("created_at", "timestamp"), (VERSION_COLUMN, "timestamp"))

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.all_columns]

    def snapshot_schema(self) -> pa.Schema:
        return pa.schema([pa.field(name, SOURCE_TYPES[type_][0]) for name, type_ in self.all_columns])

    @property
    def keeps_history(self) -> bool:
        return self.name in HISTORY_TABLES

    def history_spec(self) -> TableSpec:
        """The append-only log of versions: no key (a key appears once per version, and a version
        once per window that read it), loaded by snapshot file so a retried window adds nothing twice."""
        columns = tuple(Column(name, SOURCE_TYPES[type_][1]) for name, type_ in self.all_columns)
        return TableSpec(schema=RAW_SCHEMA, name=f"{self.name}_history", primary_key=None, version_column=None,
                         columns=columns, description=f"Every extracted version: {self.description}")

    def table_spec(self) -> TableSpec:
        columns = tuple(
            Column(name, SOURCE_TYPES[type_][1], nullable=name != self.primary_key) for name, type_ in self.all_columns
        )
        return TableSpec(
            schema=RAW_SCHEMA,
            name=self.name,
            primary_key=self.primary_key,
            version_column=VERSION_COLUMN,
            columns=columns,
            description=self.description,
        )


TABLES: dict[str, TotesysTable] = {
    t.name: t
    for t in (
        TotesysTable("department", "Departments of the company and where they sit.", (
            ("department_id", "int"), ("department_name", "text"), ("location", "text"), ("manager", "text"),
        )),
        TotesysTable("staff", "Employees; each belongs to one department.", (
            ("staff_id", "int"), ("first_name", "text"), ("last_name", "text"), ("department_id", "int"),
            ("email_address", "text"),
        )),
        TotesysTable("address", "Postal addresses of counterparties and delivery locations.", (
            ("address_id", "int"), ("address_line_1", "text"), ("address_line_2", "text"), ("district", "text"),
            ("city", "text"), ("postal_code", "text"), ("country", "text"), ("phone", "text"),
        )),
        TotesysTable("counterparty", "Customers and suppliers, with their legal address.", (
            ("counterparty_id", "int"), ("counterparty_legal_name", "text"), ("legal_address_id", "int"),
            ("commercial_contact", "text"), ("delivery_contact", "text"),
        )),
        TotesysTable("currency", "Currencies orders and payments are made in (ISO 4217 codes).", (
            ("currency_id", "int"), ("currency_code", "text"),
        )),
        TotesysTable("design", "Product designs that sales orders sell.", (
            ("design_id", "int"), ("design_name", "text"), ("file_location", "text"), ("file_name", "text"),
        )),
        TotesysTable("payment_type", "Kinds of payment: sales receipts and refunds, purchase payments and refunds.", (
            ("payment_type_id", "int"), ("payment_type_name", "text"),
        )),
        TotesysTable("sales_order", "Orders customers place for a design; updated as terms change.", (
            ("sales_order_id", "int"), ("design_id", "int"), ("staff_id", "int"), ("counterparty_id", "int"),
            ("units_sold", "int"), ("unit_price", "money"), ("currency_id", "int"),
            ("agreed_delivery_date", "date"), ("agreed_payment_date", "date"),
            ("agreed_delivery_location_id", "int"),
        )),
        TotesysTable("purchase_order", "Orders the company places with suppliers.", (
            ("purchase_order_id", "int"), ("staff_id", "int"), ("counterparty_id", "int"), ("item_code", "text"),
            ("item_quantity", "int"), ("item_unit_price", "money"), ("currency_id", "int"),
            ("agreed_delivery_date", "date"), ("agreed_payment_date", "date"),
            ("agreed_delivery_location_id", "int"),
        )),
        TotesysTable("transaction", "One per sale or purchase: what a payment settles.", (
            ("transaction_id", "int"), ("transaction_type", "text"), ("sales_order_id", "int"),
            ("purchase_order_id", "int"),
        )),
        TotesysTable("payment", "Money received or paid against a transaction.", (
            ("payment_id", "int"), ("transaction_id", "int"), ("counterparty_id", "int"), ("payment_amount", "money"),
            ("currency_id", "int"), ("payment_type_id", "int"), ("paid", "bool"), ("payment_date", "date"),
            ("company_ac_number", "int"), ("counterparty_ac_number", "int"),
        )),
    )
}
