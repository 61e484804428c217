"""A small read-only HTTP endpoint over the audit table (what API Gateway over DynamoDB did).

GET /loads?table=<schema.table or table>&since=<ISO timestamp> returns JSON, newest first.
"""

from __future__ import annotations

import datetime as dt
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from etl_assets.resources.audit import find_loads
from etl_assets.resources.warehouse.base import Warehouse


def make_server(warehouse: Warehouse, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    class AuditHandler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict | list) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (the http.server protocol)
            url = urlparse(self.path)
            if url.path != "/loads":
                return self._send(404, {"error": "use GET /loads?table=...&since=..."})
            query = parse_qs(url.query)
            try:
                since = dt.datetime.fromisoformat(query["since"][0]) if "since" in query else None
            except ValueError:
                return self._send(400, {"error": "since must be an ISO timestamp"})
            if since and since.tzinfo is None:
                since = since.replace(tzinfo=dt.timezone.utc)
            self._send(200, find_loads(warehouse, table=query.get("table", [None])[0], since=since))

        def do_POST(self) -> None:  # noqa: N802
            self._send(405, {"error": "read-only"})

        do_PUT = do_DELETE = do_PATCH = do_POST

        def log_message(self, format, *args) -> None:  # quiet; the audit rows are the record
            pass

    return ThreadingHTTPServer((host, port), AuditHandler)


def serve(warehouse: Warehouse, host: str, port: int) -> None:
    server = make_server(warehouse, host, port)
    print(f"Audit endpoint on http://{host}:{server.server_port}/loads", flush=True)
    server.serve_forever()
