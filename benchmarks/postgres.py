"""The PostgreSQL server the benchmarks measure against (the one the tests use: 127.0.0.1:5432, trust)."""

from __future__ import annotations

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def connect(database: str):
    import psycopg2

    return psycopg2.connect(dbname=database, **PG)


def admin(sql: str) -> None:
    """One statement outside a transaction (CREATE DATABASE, CHECKPOINT), in the `postgres` database."""
    connection = connect("postgres")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()
