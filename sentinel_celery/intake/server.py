"""The webhook receiver: GitHub's deliveries over HTTP, checked, deduplicated and queued in milliseconds.

:class:`Receiver` decides what one delivery gets, without doing the work (GitHub waits 10 s at most):

=====  ==========================================================================================
413    ``Content-Length`` over ``github.intake.maxBodyBytes`` (25 MB, GitHub's own cap); the body
       is not read
401    ``X-Hub-Signature-256`` missing or not the HMAC of the body with ``github.webhookSecret``
400    no ``X-GitHub-Event`` / ``X-GitHub-Delivery``, or a body that is not a JSON object
200    ``ping``, and a delivery id seen before (a redelivery or a replay: nothing queued)
204    an event the intake does not handle (logged once per event name)
202    queued on the :class:`~.intake.Inbox`; :class:`Processor` threads run the rules
=====  ==========================================================================================

Each refusal is one log line on ``sentinel.intake``. :class:`IntakeHTTPServer` is a stdlib threaded
HTTP server around it (``POST`` on any path; ``GET /health``).

Redis keys: the inbox's (intake.py) and the delivery ledger's (guard.py).
"""
from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sentinel_celery.intake.guard import DeliveryLedger, signature_ok
from sentinel_celery.intake.intake import HANDLED_EVENTS, Inbox, Intake
from sentinel_celery.worker.duty import run_step

logger = logging.getLogger("sentinel.intake")


class Receiver:
    def __init__(self, secret: str, ledger: DeliveryLedger, inbox: Inbox, max_body: int = 25 * 1024 * 1024):
        if not secret:
            raise ValueError("github.webhookSecret (GITHUB_WEBHOOK_SECRET) must be set to receive webhooks")
        self.secret, self.ledger, self.inbox, self.max_body = secret, ledger, inbox, max_body
        self._unknown_logged: set[str] = set()
        self._lock = threading.Lock()

    def too_large(self, length: int) -> bool:
        if length > self.max_body:
            logger.warning("sentinel intake: refused a delivery of %d bytes (over %d)", length, self.max_body)
            return True
        return False

    def receive(self, headers: dict[str, str], body: bytes) -> tuple[int, dict | None]:
        """The status and JSON answer for one delivery (``headers`` with lower-case names)."""
        event, delivery = headers.get("x-github-event", ""), headers.get("x-github-delivery", "")
        if not signature_ok(self.secret, body, headers.get("x-hub-signature-256")):
            logger.warning("sentinel intake: refused delivery %s (%s): %s X-Hub-Signature-256", delivery or "-",
                           event or "-", "wrong" if headers.get("x-hub-signature-256") else "no")
            return 401, {"message": "Bad signature"}
        if not event or not delivery:
            logger.warning("sentinel intake: refused a signed request without X-GitHub-Event/X-GitHub-Delivery")
            return 400, {"message": "X-GitHub-Event and X-GitHub-Delivery are required"}
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            payload = None
        if not isinstance(payload, dict):
            logger.warning("sentinel intake: refused delivery %s (%s): the body is not a JSON object", delivery, event)
            return 400, {"message": "Problems parsing JSON"}
        if event == "ping":
            return 200, {"message": "pong"}
        if event not in HANDLED_EVENTS:
            with self._lock:
                first = event not in self._unknown_logged
                self._unknown_logged.add(event)
            if first:
                logger.info("sentinel intake: ignoring %s events (not handled; logged once)", event)
            return 204, None
        if not self.ledger.claim(delivery):
            logger.info("sentinel intake: delivery %s (%s) seen before: nothing queued", delivery, event)
            return 200, {"message": "Already received", "delivery": delivery}
        self.inbox.put(event, delivery, body)
        return 202, {"message": "Accepted", "delivery": delivery}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sentinel-intake"
    server: "IntakeHTTPServer"

    def _answer(self, status: int, data: dict | None, *, close: bool = False) -> None:
        payload = json.dumps(data).encode() if data is not None else b""
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        receiver = self.server.receiver
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._answer(411, {"message": "Content-Length is required"}, close=True)
            return
        if receiver.too_large(length):
            self._answer(413, {"message": "Payload too large"}, close=True)
            return
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, data = receiver.receive(headers, body)
        except Exception:  # Redis down: GitHub shows the failed delivery, which can be redelivered
            logger.exception("sentinel intake: could not take delivery %s", headers.get("x-github-delivery", "-"))
            status, data = 503, {"message": "Unavailable"}
        self._answer(status, data)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path.rstrip("/") == "/health":
            self._answer(200, {"ok": True})
        else:
            self._answer(404, {"message": "Not Found"})

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        logger.debug("%s - %s", self.address_string(), format % args)


class IntakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, receiver: Receiver):
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
        self.receiver = receiver
        super().__init__((host.strip("[]"), port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


class Processor(threading.Thread):
    """Takes events off the inbox and runs :meth:`Intake.handle` until ``stopping`` is set; each delivery
    is claimed (``handled:<id>`` in the ledger) first, so one recovered after a crash is not handled twice."""

    def __init__(self, intake: Intake, inbox: Inbox, ledger: DeliveryLedger, stopping: threading.Event,
                 name: str = "sentinel-intake"):
        super().__init__(name=name, daemon=True)
        self.intake, self.inbox, self.ledger, self.stopping = intake, inbox, ledger, stopping

    def run(self) -> None:
        while not self.stopping.is_set():
            run_step(self.step, "intake")

    def step(self) -> None:
        item = self.inbox.take(timeout=0.5)
        if item is None:
            return
        event, delivery, payload, raw = item
        try:
            if self.ledger.claim(f"handled:{delivery}"):
                self.intake.handle(event, payload, delivery)
        finally:
            self.inbox.done(raw)
