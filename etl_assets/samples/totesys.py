"""Fill a totesys database with realistic data, and on later runs simulate ongoing business.

The first run creates the schema and a history of about eighteen months: departments, staff,
counterparties with addresses, designs, sales and purchase orders, their transactions and
payments. Every later run is one "tick" of business at `now`: new orders (with their
transactions and payments), changed orders, new staff, a department moving, a counterparty's
contact changing, payments being settled. Every row it touches gets last_updated = now, as
the real application does, so incremental extraction sees exactly these changes.
Runs are deterministic for a given seed and database state.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from decimal import Decimal
from pathlib import Path

from etl_assets.totesys.source import (
    DuckDBTotesysSource,
    SourceConnection,
    TotesysSource,
)
from etl_assets.totesys.tables import TABLES
from etl_assets.warehouse.spec import quote

DEPARTMENTS = [
    ("Sales", "Manchester"), ("Purchasing", "Manchester"), ("Production", "Leeds"), ("Dispatch", "Leds"),
    ("Finance", "Manchester"), ("Facilities", "Manchester"), ("Communications", "Leeds"), ("HR", "Leeds"),
]
CURRENCIES = ["GBP", "USD", "EUR"]
PAYMENT_TYPES = ["SALES_RECEIPT", "SALES_REFUND", "PURCHASE_PAYMENT", "PURCHASE_REFUND"]
FIRST_NAMES = ["Jeremie", "Deron", "Jeanette", "Ana", "Magdalena", "Korey", "Raphael", "Oswaldo", "Brody",
               "Jazmyn", "Meda", "Imani", "Stan", "Rick", "Flavio", "Pierre", "Jay", "Eveline", "Lemuel", "Izabella"]
LAST_NAMES = ["Franey", "Beier", "Erdman", "Glover", "Zieme", "Hackett", "Rippin", "Bergstrom", "Ratke", "Kozey",
              "Cremin", "Schmitt", "Lehner", "Hilll", "Muller", "Kuhic", "Mayert", "Sporer", "Shields", "Hagenes"]
STREETS = ["Alexie Cliffs", "Herzog Via", "Keebler Lane", "Rudolph Stream", "Runolfsdottir Square",
           "Fritsch Haven", "Cronin Path", "Greenholt Rapid", "Orion Road", "Torphy Turnpike"]
CITIES = [("New Patienceburgh", "Avon", "United States"), ("Aliso Viejo", None, "San Marino"),
          ("Lake Charles", "Buckinghamshire", "Samoa"), ("Olsonside", "Bedfordshire", "Republic of Korea"),
          ("Fort Shadburgh", None, "Turkey"), ("Kendraburgh", "Cambridgeshire", "Zimbabwe"),
          ("Sayreville", "Cheshire", "Austria"), ("East Bobbie", None, "Heard Island and McDonald Islands")]
COMPANY_WORDS = ["Fahey", "Leannon", "Armstrong", "Kohler", "Frami", "Mraz", "Bogan", "Yost", "Moore", "Grady"]
COMPANY_SUFFIXES = ["and Sons", "Inc", "LLC", "Group", "- Sawayn", "Partners"]
DESIGN_WORDS = ["Wooden", "Bronze", "Granite", "Steel", "Concrete", "Rubber", "Plastic", "Soft", "Frozen", "Fresh",
                "Cotton", "Metal", "Bespoke", "Rustic", "Sleek", "Tasty"]
HISTORY_DAYS = 540

BASE_COUNTS = {"address": 30, "counterparty": 20, "staff": 20, "design": 50, "sales_order": 200,
               "purchase_order": 150}


class Seeder:
    """Writes rows through one source transaction and counts what it did."""

    def __init__(self, connection: SourceConnection, rng: random.Random, now: dt.datetime):
        self.connection = connection
        self.rng = rng
        self.now = now
        self.inserted: Counter[str] = Counter()
        self.updated: Counter[str] = Counter()

    def next_id(self, table: str) -> int:
        key = TABLES[table].primary_key
        return self.connection.fetchall(f"SELECT COALESCE(MAX({quote(key)}), 0) + 1 FROM {quote(table)}")[0][0]

    def ids(self, table: str) -> list[int]:
        key = TABLES[table].primary_key
        return [r[0] for r in self.connection.fetchall(f"SELECT {quote(key)} FROM {quote(table)} ORDER BY 1")]

    def older_ids(self, table: str, where: str = "TRUE") -> list[int]:
        """Keys of rows not yet touched in this tick, so one row is never both inserted and updated."""
        key = TABLES[table].primary_key
        return [r[0] for r in self.connection.fetchall(
            f'SELECT {quote(key)} FROM {quote(table)} WHERE "last_updated" < {self.connection.param} AND {where} '
            "ORDER BY 1", [self.now])]

    def insert(self, table: str, rows: list[dict]) -> None:
        columns = TABLES[table].column_names
        marks = ", ".join([self.connection.param] * len(columns))
        sql = f"INSERT INTO {quote(table)} ({', '.join(quote(c) for c in columns)}) VALUES ({marks})"
        self.connection.executemany(sql, [[row[c] for c in columns] for row in rows])
        self.inserted[table] += len(rows)

    def update(self, table: str, key: int, **values) -> None:
        """Change some columns of one row; last_updated moves to now, as the application does."""
        values["last_updated"] = self.now
        sets = ", ".join(f"{quote(c)} = {self.connection.param}" for c in values)
        primary_key = quote(TABLES[table].primary_key)
        self.connection.execute(
            f"UPDATE {quote(table)} SET {sets} WHERE {primary_key} = {self.connection.param}", [*values.values(), key]
        )
        self.updated[table] += 1

    def past(self, days: int = HISTORY_DAYS) -> tuple[dt.datetime, dt.datetime]:
        """A (created_at, last_updated) pair in the history, last_updated never before created_at."""
        created = self.now - dt.timedelta(seconds=self.rng.randint(3600, days * 86400))
        updated = min(created + dt.timedelta(seconds=self.rng.randint(0, 30 * 86400)), self.now - dt.timedelta(minutes=1))
        return created, max(created, updated)

    def stamps(self, history: bool) -> dict:
        created, updated = self.past() if history else (self.now, self.now)
        return {"created_at": created, "last_updated": updated}

    def addresses(self, count: int, history: bool) -> None:
        start = self.next_id("address")
        rows = []
        for address_id in range(start, start + count):
            city, district, country = self.rng.choice(CITIES)
            rows.append({
                "address_id": address_id,
                "address_line_1": f"{self.rng.randint(1, 9999)} {self.rng.choice(STREETS)}",
                "address_line_2": self.rng.choice([None, f"Apt. {self.rng.randint(1, 999)}"]),
                "district": district, "city": city,
                "postal_code": f"{self.rng.randint(10000, 99999)}-{self.rng.randint(1000, 9999)}",
                "country": country, "phone": f"{self.rng.randint(1000, 9999)} {self.rng.randint(100000, 999999)}",
                **self.stamps(history),
            })
        self.insert("address", rows)

    def counterparties(self, count: int, history: bool) -> None:
        start, addresses = self.next_id("counterparty"), self.ids("address")
        rows = [{
            "counterparty_id": counterparty_id,
            "counterparty_legal_name": f"{self.rng.choice(COMPANY_WORDS)} {self.rng.choice(COMPANY_SUFFIXES)}",
            "legal_address_id": self.rng.choice(addresses),
            "commercial_contact": self.person(), "delivery_contact": self.person(),
            **self.stamps(history),
        } for counterparty_id in range(start, start + count)]
        self.insert("counterparty", rows)

    def person(self) -> str:
        return f"{self.rng.choice(FIRST_NAMES)} {self.rng.choice(LAST_NAMES)}"

    def staff(self, count: int, history: bool) -> None:
        start, departments = self.next_id("staff"), self.ids("department")
        rows = []
        for staff_id in range(start, start + count):
            first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
            rows.append({
                "staff_id": staff_id, "first_name": first, "last_name": last,
                "department_id": self.rng.choice(departments),
                "email_address": f"{first.lower()}.{last.lower()}{staff_id}@terrifictotes.com",
                **self.stamps(history),
            })
        self.insert("staff", rows)

    def designs(self, count: int, history: bool) -> None:
        start = self.next_id("design")
        rows = []
        for design_id in range(start, start + count):
            word = self.rng.choice(DESIGN_WORDS)
            rows.append({
                "design_id": design_id, "design_name": word, "file_location": f"/usr/share/{word.lower()}",
                "file_name": f"{word.lower()}-{self.rng.getrandbits(40):010x}.json", **self.stamps(history),
            })
        self.insert("design", rows)

    def money(self, low: float, high: float) -> Decimal:
        return Decimal(f"{self.rng.uniform(low, high):.2f}")

    def agreed_dates(self, created_at: dt.datetime) -> tuple[dt.date, dt.date]:
        delivery = created_at.date() + dt.timedelta(days=self.rng.randint(1, 30))
        return delivery, delivery + dt.timedelta(days=self.rng.randint(0, 10))

    def orders(self, sales: int, purchases: int, history: bool) -> None:
        """New sales and purchase orders, each with its transaction and payment."""
        staff, counterparties = self.ids("staff"), self.ids("counterparty")
        designs, addresses, currencies = self.ids("design"), self.ids("address"), self.ids("currency")
        payment_types = dict(self.connection.fetchall(
            'SELECT "payment_type_name", "payment_type_id" FROM "payment_type"'))
        transaction_id, payment_id = self.next_id("transaction"), self.next_id("payment")
        transactions, payments, sales_rows, purchase_rows = [], [], [], []
        for offset in range(sales + purchases):
            stamps = self.stamps(history)
            delivery, payment_date = self.agreed_dates(stamps["created_at"])
            common = {
                "staff_id": self.rng.choice(staff), "counterparty_id": self.rng.choice(counterparties),
                "currency_id": self.rng.choice(currencies), "agreed_delivery_date": delivery,
                "agreed_payment_date": payment_date, "agreed_delivery_location_id": self.rng.choice(addresses),
                **stamps,
            }
            if offset < sales:
                order = {"sales_order_id": self.next_id("sales_order") + len(sales_rows),
                         "design_id": self.rng.choice(designs), "units_sold": self.rng.randint(1000, 100000),
                         "unit_price": self.money(2, 4), **common}
                sales_rows.append(order)
                kind, amount, payment_type = "SALE", order["units_sold"] * order["unit_price"], "SALES_RECEIPT"
                links = {"sales_order_id": order["sales_order_id"], "purchase_order_id": None}
            else:
                order = {"purchase_order_id": self.next_id("purchase_order") + len(purchase_rows),
                         "item_code": f"{self.rng.getrandbits(28):07X}", "item_quantity": self.rng.randint(1, 1000),
                         "item_unit_price": self.money(1, 1000), **common}
                purchase_rows.append(order)
                kind, payment_type = "PURCHASE", "PURCHASE_PAYMENT"
                amount = order["item_quantity"] * order["item_unit_price"]
                links = {"sales_order_id": None, "purchase_order_id": order["purchase_order_id"]}
            transactions.append({"transaction_id": transaction_id, "transaction_type": kind, **links, **stamps})
            payments.append({
                "payment_id": payment_id, "transaction_id": transaction_id,
                "counterparty_id": common["counterparty_id"], "payment_amount": min(amount, Decimal("99999999.99")),
                "currency_id": common["currency_id"], "payment_type_id": payment_types[payment_type],
                "paid": history and self.rng.random() < 0.7, "payment_date": payment_date,
                "company_ac_number": self.rng.randint(10000000, 99999999),
                "counterparty_ac_number": self.rng.randint(10000000, 99999999), **stamps,
            })
            transaction_id, payment_id = transaction_id + 1, payment_id + 1
        self.insert("sales_order", sales_rows)
        self.insert("purchase_order", purchase_rows)
        self.insert("transaction", transactions)
        self.insert("payment", payments)

    def history(self) -> None:
        """The first run: reference data and about eighteen months of orders."""
        for table, names in (("department", DEPARTMENTS), ("currency", CURRENCIES), ("payment_type", PAYMENT_TYPES)):
            rows = []
            for index, name in enumerate(names, start=1):
                if table == "department":
                    row = {"department_name": name[0], "location": name[1], "manager": self.person()}
                elif table == "currency":
                    row = {"currency_code": name}
                else:
                    row = {"payment_type_name": name}
                created = self.now - dt.timedelta(days=HISTORY_DAYS + 30)
                rows.append({TABLES[table].primary_key: index, **row, "created_at": created, "last_updated": created})
            self.insert(table, rows)
        self.addresses(BASE_COUNTS["address"], history=True)
        self.counterparties(BASE_COUNTS["counterparty"], history=True)
        self.staff(BASE_COUNTS["staff"], history=True)
        self.designs(BASE_COUNTS["design"], history=True)
        self.orders(BASE_COUNTS["sales_order"], BASE_COUNTS["purchase_order"], history=True)

    def business(self) -> None:
        """One tick of ongoing business at `now`."""
        rng = self.rng
        self.staff(rng.randint(1, 2), history=False)
        self.addresses(1, history=False)
        self.designs(rng.randint(0, 2), history=False)
        self.orders(rng.randint(3, 8), rng.randint(1, 3), history=False)
        for order_id in rng.sample(self.older_ids("sales_order"), rng.randint(2, 5)):
            delivery = self.now.date() + dt.timedelta(days=rng.randint(1, 30))
            self.update("sales_order", order_id, units_sold=rng.randint(1000, 100000), agreed_delivery_date=delivery)
        department_id = rng.choice(self.older_ids("department"))
        self.update("department", department_id, location=rng.choice(["Manchester", "Leeds", "Leds", "Sheffield"]))
        self.update("counterparty", rng.choice(self.older_ids("counterparty")), commercial_contact=self.person())
        phone = f"{rng.randint(1000, 9999)} {rng.randint(100000, 999999)}"
        self.update("address", rng.choice(self.older_ids("address")), phone=phone)
        unpaid = self.older_ids("payment", 'NOT "paid"')
        for payment_id in rng.sample(unpaid, min(len(unpaid), rng.randint(2, 5))):
            self.update("payment", payment_id, paid=True)


def seed_totesys(connection: SourceConnection, seed: int = 2, now: dt.datetime | None = None) -> dict[str, dict]:
    """Create and fill the schema if it is empty, else simulate one tick of business.

    `now` is naive UTC (totesys keeps UTC wall-clock times). Returns, per table, the rows
    inserted and updated.
    """
    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    connection.apply_schema()
    orders = connection.fetchall('SELECT COUNT(*) FROM "sales_order"')[0][0]
    seeder = Seeder(connection, random.Random(f"{seed}:{orders}"), now)
    if orders == 0:
        seeder.history()
    else:
        seeder.business()
    return {t: {"inserted": seeder.inserted[t], "updated": seeder.updated[t]} for t in TABLES}


def seed(source: TotesysSource, seed_value: int = 2) -> dict[str, dict]:
    with source.connect() as connection:
        return seed_totesys(connection, seed=seed_value)


def source_is_empty(source: TotesysSource) -> bool:
    if isinstance(source, DuckDBTotesysSource) and not Path(source.path).exists():
        return True
    with source.connect() as connection:
        return not connection.table_exists("sales_order") or not connection.fetchall(
            'SELECT 1 FROM "sales_order" LIMIT 1')


def seed_embedded_if_empty(source: TotesysSource) -> dict[str, dict] | None:
    """What `make run` needs: the embedded (DuckDB) source seeded the first time, never a real one."""
    if isinstance(source, DuckDBTotesysSource) and source_is_empty(source):
        return seed(source)
    return None
