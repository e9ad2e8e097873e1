"""The threaded HTTP server and :class:`SimulatorServer`, which runs it in the background."""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .api_routes import handle_api
from .clock import Clock
from .config import SimulatorConfig
from .control_routes import PREFIX, handle_control
from .http_types import Request, Response
from .ids import isoformat
from .reqlog import redact_headers, summarize_body
from .simulator import Simulator

logger = logging.getLogger("replicate_simulator")

_MAX_BODY = 200 * 1024 * 1024


class _HTTPServer(ThreadingHTTPServer):
    """Tracks open connections so :meth:`close_connections` can end idle keep-alives."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="sim-http",
            daemon=True,
        )
        with self._connections_lock:
            self._connections[request] = thread
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def close_connections(self, timeout: float) -> None:
        with self._connections_lock:
            items = list(self._connections.items())
        for sock, _ in items:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, thread in items:
            thread.join(timeout)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection error from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "replicate-simulator"
    sys_version = ""
    timeout = 120  # idle keep-alive connections end after this
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls
    server: _HTTPServer

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass

    def _serve(self) -> None:
        sim = self.server.simulator
        request = self._read_request()
        if request is None:
            return
        if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
            self._send(request, handle_control(sim, request))
            return
        generation = sim.generation
        try:
            response = handle_api(sim, request)
        except Exception:
            logger.exception("unhandled error for %s %s", request.method, request.path)
            response = Response.json(
                500, {"title": "Internal Server Error", "detail": "Simulator error", "status": 500}
            )
        if sim.generation == generation:  # a reset meanwhile means another test's log
            self._log(sim, request, response)
        self._send(request, response)

    def _read_request(self) -> Request | None:
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body = self._read_body(headers)
        except (ValueError, OSError):
            self.close_connection = True
            return None
        return Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=headers,
            body=body,
        )

    def _read_body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(headers.get("content-length") or 0)
        if length < 0 or length > _MAX_BODY:
            raise ValueError("bad content-length")
        return self.rfile.read(length) if length else b""

    def _send(self, request: Request, response: Response) -> None:
        if response.drop:
            # Hang up without a status line, as a crashed proxy or network would.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(response.body)))
        self.end_headers()
        if request.method != "HEAD" and response.body:
            self.wfile.write(response.body)

    def _log(self, sim: Simulator, request: Request, response: Response) -> None:
        sim.request_log.append(
            {
                "time": isoformat(sim.clock.time()),
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "headers": redact_headers(request.headers),
                "body": summarize_body(request.header("content-type"), request.body),
                "status": None if response.drop else response.status,
                "dropped": response.drop,
                "endpoint": response.note.get("endpoint"),
                "scenario": response.note.get("scenario"),
                "prediction_id": response.note.get("prediction_id"),
            }
        )


class SimulatorServer:
    """A Replicate-compatible server; ``start()`` serves from a background thread.

    ``base_url`` (default ``http://<host>:<port>``) is the address written into
    ``urls`` of predictions and files; outputs use ``config.delivery_base_url`` if set.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8787,
        config: SimulatorConfig | None = None,
        clock: Clock | None = None,
        webhook_secret: str | None = None,
        base_url: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.simulator = Simulator(config, clock=clock, webhook_secret=webhook_secret)
        self._public_base_url = base_url.rstrip("/") if base_url else None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return self.simulator.base_url

    def start(self) -> SimulatorServer:
        """Bind (port 0 picks a free port) and serve in a daemon thread."""
        self._httpd = _HTTPServer((self.host, self.port), self.simulator)
        self.port = self._httpd.server_address[1]
        url_host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        self.simulator.base_url = self._public_base_url or f"http://{url_host}:{self.port}"
        self.simulator.start()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="sim-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, wake waiting requests, close connections and join threads."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self.simulator.close()
        self._httpd.close_connections(timeout)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
        self._httpd = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
