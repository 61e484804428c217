-- The totesys OLTP schema. Portable between PostgreSQL (production) and DuckDB (the embedded
-- default): plain types, quoted identifiers ("transaction" is a reserved word in both).
-- Foreign keys are left out because DuckDB cannot update a row that another table references;
-- the seeder keeps references consistent instead.

CREATE TABLE IF NOT EXISTS "department" (
    "department_id" INTEGER PRIMARY KEY,
    "department_name" VARCHAR NOT NULL,
    "location" VARCHAR,
    "manager" VARCHAR,
    "created_at" TIMESTAMP NOT NULL,
    "last_updated" TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS "staff" (
    "staff_id" INTEGER PRIMARY KEY,
    "first_name" VARCHAR NOT NULL,
    "last_name" VARCHAR NOT NULL,
    "department_id" INTEGER NOT NULL,
    "email_address" VARCHAR NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "last_updated" TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS "address" (
    "address_id" INTEGER PRIMARY KEY,
    "address_line_1" VARCHAR NOT NULL,
    "address_line_2" VARCHAR,
    "district" VARCHAR,
    "city" VARCHAR NOT NULL,
    "postal_code" VARCHAR NOT NULL,
    "country" VARCHAR NOT NULL,
    "phone" VARCHAR NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "last_updated" TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS "counterparty" (
    "counterparty_id" INTEGER PRIMARY KEY,
    "counterparty_legal_name" VARCHAR NOT NULL,
    "legal_address_id" INTEGER NOT NULL,
    "commercial_contact" VARCHAR,
    "delivery_contact" VARCHAR,
    "created_at" TIMESTAMP NOT NULL,
    "last_updated" TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS "currency" (
    "currency_id" INTEGER PRIMARY KEY,
    "currency_code" VARCHAR NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "last_updated" TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS "design" (
    "design_id" INTEGER PRIMARY KEY,
    "design_name" VARCHAR NOT NULL,
    "file_location" VARCHAR NOT NULL,
    "file_name" VARCHAR NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "last_updated" TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS "payment_type" (
    "payment_type_id" INTEGER PRIMARY KEY,
    "payment_type_name" VARCHAR NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "last_updated" TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS "sales_order" (
    "sales_order_id" INTEGER PRIMARY KEY,
    "design_id" INTEGER NOT NULL,
    "staff_id" INTEGER NOT NULL,
    "counterparty_id" INTEGER NOT NULL,
    "units_sold" INTEGER NOT NULL,
    "unit_price" NUMERIC(10, 2) NOT NULL,
    "currency_id" INTEGER NOT NULL,
    "agreed_delivery_date" DATE NOT NULL,
    "agreed_payment_date" DATE NOT NULL,
    "agreed_delivery_location_id" INTEGER NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "last_updated" TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS "purchase_order" (
    "purchase_order_id" INTEGER PRIMARY KEY,
    "staff_id" INTEGER NOT NULL,
    "counterparty_id" INTEGER NOT NULL,
    "item_code" VARCHAR NOT NULL,
    "item_quantity" INTEGER NOT NULL,
    "item_unit_price" NUMERIC(10, 2) NOT NULL,
    "currency_id" INTEGER NOT NULL,
    "agreed_delivery_date" DATE NOT NULL,
    "agreed_payment_date" DATE NOT NULL,
    "agreed_delivery_location_id" INTEGER NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "last_updated" TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS "transaction" (
    "transaction_id" INTEGER PRIMARY KEY,
    "transaction_type" VARCHAR NOT NULL,
    "sales_order_id" INTEGER,
    "purchase_order_id" INTEGER,
    "created_at" TIMESTAMP NOT NULL,
    "last_updated" TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS "payment" (
    "payment_id" INTEGER PRIMARY KEY,
    "transaction_id" INTEGER NOT NULL,
    "counterparty_id" INTEGER NOT NULL,
    "payment_amount" NUMERIC(10, 2) NOT NULL,
    "currency_id" INTEGER NOT NULL,
    "payment_type_id" INTEGER NOT NULL,
    "paid" BOOLEAN NOT NULL,
    "payment_date" DATE NOT NULL,
    "company_ac_number" INTEGER NOT NULL,
    "counterparty_ac_number" INTEGER NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "last_updated" TIMESTAMP NOT NULL
);

-- Extraction reads windows of last_updated; PostgreSQL answers them from these indexes.
CREATE INDEX IF NOT EXISTS "sales_order_last_updated" ON "sales_order" ("last_updated");
CREATE INDEX IF NOT EXISTS "purchase_order_last_updated" ON "purchase_order" ("last_updated");
CREATE INDEX IF NOT EXISTS "payment_last_updated" ON "payment" ("last_updated");
CREATE INDEX IF NOT EXISTS "transaction_last_updated" ON "transaction" ("last_updated");
