"""The PostgreSQL servers the benchmarks measure against: the machine's (the one the tests use:
127.0.0.1:5432, trust) and, for history, a PostgreSQL 18 one the benchmark starts (`postgres18`)."""

from __future__ import annotations

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def connect(database: str, server: dict | None = None):
    import psycopg2

    return psycopg2.connect(dbname=database, **(server or PG))


def admin(sql: str, server: dict | None = None) -> None:
    """One statement outside a transaction (CREATE DATABASE, CHECKPOINT), in the `postgres` database."""
    connection = connect("postgres", server)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


def server_version(server: dict | None = None) -> str:
    connection = connect("postgres", server)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return cursor.fetchone()[0]
    finally:
        connection.close()
