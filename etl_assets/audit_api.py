"""The read-only HTTP endpoint over the audit table (what API Gateway over DynamoDB did).

GET /loads?table=<schema.table or table>&since=<ISO timestamp>&status=<STATUS>&limit=<N> returns JSON,
newest first: the same rows and filters as `etl-assets audit --json`. GET /healthz answers without a
token. Served by Starlette on uvicorn (both already installed with dagster-webserver) rather than
`http.server`, which Python's documentation says is not for production.

A token (`ETL_ASSETS_AUDIT_TOKEN`) is required as `Authorization: Bearer <token>` whenever it is set,
and the server refuses to listen beyond loopback without one. A read runs no DDL (find_loads).

A read runs in a worker thread, never on the event loop, and waits at most LOCK_TIMEOUT_SECONDS for a
lock a load holds (DuckDB's single-writer lock, a PostgreSQL table lock), then answers 503: so one
waiting read cannot stop the server, and /healthz, which reads nothing, always answers.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import json
import os
import socket

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from etl_assets.warehouse.audit import STATUSES, find_loads
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.errors import WarehouseBusy, WarehouseUnreachable

TOKEN_ENV = "ETL_ASSETS_AUDIT_TOKEN"
MAX_LIMIT = 10_000
# A DuckDB load holds the file for one step and lets go at least every io_manager.HOLD_SECONDS (5 s):
# a read waiting this long gets in between two loads, or answers 503 while the thread is freed.
LOCK_TIMEOUT_SECONDS = 10.0
RETRY_AFTER_SECONDS = 5


class AuditServerConfigError(ValueError):
    """The endpoint would be exposed without a token."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(status: int, body) -> Response:
    return Response(json.dumps(body, default=str), status_code=status, media_type="application/json")


def make_app(warehouse: Warehouse, token: str | None = None,
             lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS) -> Starlette:
    """The ASGI app; `token` None or empty means no token is asked for (loopback only, see `serve`)."""
    reader = warehouse.with_lock_timeout(lock_timeout_seconds)

    def authorized(request: Request) -> bool:
        if not token:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    async def loads(request: Request) -> Response:
        if not authorized(request):
            return JSONResponse({"error": "a bearer token is required"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        query = request.query_params
        unknown = set(query) - {"table", "since", "status", "limit"}
        if unknown:
            return _json(400, {"error": f"unknown parameter(s) {sorted(unknown)}: use table, since, status, limit"})
        try:
            since = dt.datetime.fromisoformat(query["since"]) if "since" in query else None
        except ValueError:
            return _json(400, {"error": "since must be an ISO timestamp"})
        if since and since.tzinfo is None:
            since = since.replace(tzinfo=dt.timezone.utc)
        status = query.get("status", "").upper() or None
        if status and status not in STATUSES:
            return _json(400, {"error": f"status must be one of {', '.join(STATUSES)}"})
        try:
            limit = int(query.get("limit", "1000"))
            if not 1 <= limit <= MAX_LIMIT:
                raise ValueError
        except ValueError:
            return _json(400, {"error": f"limit must be an integer from 1 to {MAX_LIMIT}"})
        try:
            rows = await run_in_threadpool(find_loads, reader, table=query.get("table") or None, since=since,
                                           status=status, limit=limit)
        except WarehouseBusy:
            busy = (f"the warehouse is busy: a load held its lock for the {lock_timeout_seconds:g} s this read "
                    "waited; try again shortly")
            return JSONResponse({"error": busy}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        except WarehouseUnreachable as error:
            return _json(503, {"error": str(error)})
        return _json(200, rows)

    async def healthz(request: Request) -> Response:
        return _json(200, {"ok": True})

    async def not_found(request: Request, exc) -> Response:
        return _json(404, {"error": "use GET /loads?table=&since=&status=&limit="})

    async def not_allowed(request: Request, exc) -> Response:
        return _json(405, {"error": "read-only: GET only"})

    routes = [Route("/loads", loads, methods=["GET"]), Route("/healthz", healthz, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})


def build_server(warehouse: Warehouse, host: str, port: int, token: str | None = None,
                 lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS):
    """(uvicorn server, listening socket): bound first, so port 0 reports the real port."""
    import uvicorn

    token = os.environ.get(TOKEN_ENV, "") if token is None else token
    if not token and not is_loopback(host):
        raise AuditServerConfigError(f"refusing to listen on {host} without a token: set {TOKEN_ENV} "
                                     "(clients send Authorization: Bearer <token>), or listen on 127.0.0.1")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections made before uvicorn has started wait in the backlog, not refused
    config = uvicorn.Config(make_app(warehouse, token, lock_timeout_seconds), log_level="warning",
                            access_log=False, server_header=False, timeout_graceful_shutdown=10)
    return uvicorn.Server(config), sock


def serve(warehouse: Warehouse, host: str, port: int, token: str | None = None) -> None:
    server, sock = build_server(warehouse, host, port, token)
    shown = f"[{host}]" if ":" in host else host
    print(f"Audit endpoint on http://{shown}:{sock.getsockname()[1]}/loads", flush=True)
    server.run(sockets=[sock])  # uvicorn stops gracefully on SIGINT and SIGTERM
    print("Audit endpoint stopped", flush=True)
