"""RabbitMQ's management HTTP API, for what AMQP cannot do: close another process's connections.

A hung or partitioned worker keeps its TCP connection, so RabbitMQ keeps what it delivered to it
until AMQP heartbeats expire (minutes). When failover declares such a worker dead it closes the
worker's connections here (found by the client properties every Sentinel process sends, see
amqp_transport.py), so RabbitMQ gives back at once anything still unacknowledged, and a zombie that
wakes finds its connection gone. Configured by ``rabbitmq.managementUrl``
(``http://user:password@host:15672``); without it nothing is closed and RabbitMQ's own heartbeat
timeout applies (messages Sentinel holds are republished by failover either way).

Redis keys: none.
"""
from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request
from urllib.parse import quote, urlsplit, urlunsplit

logger = logging.getLogger(__name__)


class ManagementAPI:
    """A tiny client of the endpoints Sentinel uses (``/api/connections``)."""

    def __init__(self, url: str, *, timeout: float = 5.0):
        parts = urlsplit(url)
        self.base = urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else ""),
                                parts.path.rstrip("/"), "", ""))
        user, password = parts.username or "guest", parts.password or "guest"
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.timeout = timeout

    def _request(self, method: str, path: str, headers: dict | None = None):
        req = urllib.request.Request(self.base + path, method=method,
                                     headers={"Authorization": self._auth, **(headers or {})})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - configured http(s) URL
            body = resp.read()
        return json.loads(body) if body else None

    def connections(self) -> list[dict]:
        return self._request("GET", "/api/connections?columns=name,client_properties,peer_host,peer_port") or []

    def close_connection(self, name: str, reason: str) -> bool:
        try:
            self._request("DELETE", "/api/connections/" + quote(name, safe=""), headers={"X-Reason": reason})
            return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # closed meanwhile
                return False
            raise

    def close_worker(self, hostname: str, pid: int, reason: str) -> int:
        """Close every connection a Sentinel process (``hostname``, ``pid``) opened; how many."""
        closed = 0
        for conn in self.connections():
            props = conn.get("client_properties") or {}
            if props.get("sentinel_hostname") == hostname and int(props.get("sentinel_pid") or 0) == int(pid):
                if self.close_connection(conn["name"], reason):
                    closed += 1
        return closed
