"""AMQP messages as Sentinel keeps and republishes them, and how a worker's connections name it.

A message read from RabbitMQ (kombu's ``Message``) becomes the same JSON *envelope* kombu's Redis
transport stores — ``body`` (base64), ``content-type``, ``content-encoding``, ``headers``,
``properties`` — so the layers above read task id, name, kwargs and home the same way on both
brokers. RabbitMQ drops message properties it does not know, so Sentinel's routing properties
(``sentinel_home``, ``job_type``) travel as headers on ``amqp://`` (:func:`routing_into_headers`,
connected to ``before_task_publish`` by ``install()``) and come back as properties in the envelope.

:func:`client_properties` is what every connection of a Sentinel process tells RabbitMQ about
itself (shown by ``rabbitmqctl list_connections client_properties`` and the management API), so
failover can find and close a dead worker's connections (rabbitmq_management.py).

Redis keys: none.
"""
from __future__ import annotations

import base64
import os
import socket

from kombu import Connection, Producer

from sentinel_celery.routing import HOME_PROPERTY

AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
#: routing properties RabbitMQ would drop; carried as headers
ROUTING_PROPERTIES = (HOME_PROPERTY, "job_type")
_PASSED_PROPERTIES = ("correlation_id", "reply_to", "delivery_mode", "priority", "expiration")


def client_properties(hostname: str | None = None, pid: int | None = None) -> dict:
    hostname = hostname or socket.gethostname()
    pid = pid or os.getpid()
    return {"connection_name": f"sentinel-celery {hostname} pid {pid}",
            "sentinel_hostname": hostname, "sentinel_pid": pid}


def routing_into_headers(headers: dict | None, properties: dict | None) -> None:
    """``before_task_publish``: copy Sentinel's routing properties into the message headers."""
    if headers is None or not properties:
        return
    for name in ROUTING_PROPERTIES:
        if properties.get(name) and name not in headers:
            headers[name] = properties[name]


def envelope_of(message) -> dict:
    """The kombu-Redis-style envelope of a kombu ``Message`` received over AMQP."""
    headers = dict(message.headers or {})
    props = message.properties or {}
    info = message.delivery_info or {}
    properties = {k: props[k] for k in _PASSED_PROPERTIES if props.get(k) is not None}
    properties.update({"body_encoding": "base64",
                       "delivery_info": {"exchange": info.get("exchange") or "",
                                         "routing_key": info.get("routing_key") or ""}})
    for name in ROUTING_PROPERTIES:
        if headers.get(name):
            properties[name] = headers[name]
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    return {"body": base64.b64encode(body).decode(), "content-type": message.content_type,
            "content-encoding": message.content_encoding, "headers": headers, "properties": properties}


def publish_envelope(channel, envelope: dict, *, exchange: str, routing_key: str,
                     headers: dict | None = None, home: str | None = None) -> None:
    """Publish ``envelope`` (with extra ``headers``; ``home`` as its new home) and wait for the
    broker's confirm where the connection asks for them."""
    props = envelope.get("properties") or {}
    message_headers = dict(envelope.get("headers") or {})
    message_headers.update(headers or {})
    if home:
        message_headers[HOME_PROPERTY] = home
    body = base64.b64decode(envelope.get("body") or "")
    Producer(channel).publish(
        body, exchange=exchange, routing_key=routing_key, headers=message_headers,
        content_type=envelope.get("content-type") or "application/json",
        content_encoding=envelope.get("content-encoding") or "utf-8",
        **{k: props[k] for k in _PASSED_PROPERTIES if props.get(k) is not None})


def open_connection(url: str, *, confirm: bool = True) -> Connection:
    """A connection of Sentinel's own (never the app's pool): confirms on, named like the worker's."""
    return Connection(url, connect_timeout=5, heartbeat=0,
                      transport_options={"confirm_publish": confirm, "client_properties": client_properties()})
