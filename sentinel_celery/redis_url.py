"""``redis+sentinel://`` URLs: one name for a Redis Sentinel deployment, and its translations.

    redis+sentinel://[[user]:password@]h1:26379,h2:26379,h3:26379/<master name>[/<db>][?sentinel_password=...]

The password before ``@`` is the Redis master's (and its replicas'); a password for the sentinels
themselves, when they have ``requirepass``, goes in the ``sentinel_password`` query parameter.
This module only parses and translates text (no connection, no other module of Sentinel: it sits
beside config.py, which validates ``redis.url`` with it): :func:`parse_sentinel_url` for
Sentinel's own client (state/redis_sentinel.py), :func:`kombu_sentinel_url` and
:func:`kombu_transport_options` for the Celery broker and result backend (``sentinel://`` with
``master_name``), :func:`redact` for messages. Owns no Redis keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, unquote

SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
QUERY_PARAMETERS = ("sentinel_password",)
EXAMPLE = f"{SCHEME}://h1:26379,h2:26379/mymaster/0"


class RedisURLError(ValueError):
    """A Redis URL that cannot be used; the message is one line and never shows a password.

    ``reason`` is the message without the URL (configuration errors name the URL themselves)."""

    def __init__(self, shown: str, reason: str):
        self.reason = reason
        super().__init__(f"{shown}: {reason}")


@dataclass(frozen=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)

    def where(self) -> str:
        """``master 'mymaster' via sentinels h1:26379,h2:26379`` — for messages."""
        return f"master '{self.master}' via sentinels " + ",".join(f"{h}:{p}" for h, p in self.sentinels)


def is_sentinel_url(url: str) -> bool:
    return url.lower().startswith(SCHEME + "://")


def redact(url: str) -> str:
    """``url`` with its passwords (before ``@`` and in the query) replaced by ``***``."""
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hosts}" if ":" in userinfo else f"{userinfo}@{hosts}"
    path, qmark, query = path.partition("?")
    if query:
        query = "&".join(f"{k}=***" if "password" in k.lower() else f"{k}={v}"
                         for k, _, v in (p.partition("=") for p in query.split("&")))
    return f"{head}://{netloc}{slash}{path}{qmark}{query}"


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse ``redis+sentinel://...``; raises :class:`RedisURLError` naming what is wrong."""
    shown = redact(url)
    if not is_sentinel_url(url):
        raise RedisURLError(shown, f"not a {SCHEME}:// URL")
    rest = url[len(SCHEME) + 3:]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon and secret else None
    parts = [part.strip() for part in netloc.split(",")]
    if parts == [""]:
        raise RedisURLError(shown, f"no sentinel host (expected {EXAMPLE})")
    if "" in parts:
        raise RedisURLError(shown, "an empty sentinel address between commas")
    sentinels = tuple(_host_port(part, shown) for part in parts)
    segments = path[:-1].split("/") if path.endswith("/") else path.split("/")
    if not segments[0]:
        raise RedisURLError(shown, f"no master name (expected {EXAMPLE})")
    if len(segments) > 2:
        raise RedisURLError(shown, f"the path must be /<master name>/<db>, got '/{path}'")
    master = unquote(segments[0])
    db_text = segments[1] if len(segments) == 2 else "0"
    if not db_text.isdigit():
        raise RedisURLError(shown, f"the database must be a number, got '{db_text}'")
    sentinel_password = None
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if key not in QUERY_PARAMETERS:
            raise RedisURLError(shown, f"unknown parameter '{key}' (known: {', '.join(QUERY_PARAMETERS)})")
        sentinel_password = values[-1] or None
    return SentinelURL(sentinels, master, int(db_text), username, password, sentinel_password)


def _host_port(part: str, shown: str) -> tuple[str, int]:
    part = part.strip()
    if part.startswith("["):  # [::1]:26379
        host, _, port_text = part[1:].partition("]")
        port_text = port_text.lstrip(":")
    else:
        host, _, port_text = part.rpartition(":") if ":" in part else (part, "", "")
    if not host:
        raise RedisURLError(shown, f"sentinel address '{part}' has no host")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise RedisURLError(shown, f"sentinel address '{part}' has no valid port")
    return host, int(port_text) if port_text else DEFAULT_SENTINEL_PORT


def kombu_sentinel_url(parsed: SentinelURL) -> str:
    """kombu's form: ``sentinel://[:password@]h1:26379/db;sentinel://[:password@]h2:26379/db``.

    kombu (broker) and Celery's ``sentinel://`` result backend take the master's password from the
    URL and the master name from the transport options."""
    auth = ""
    if parsed.password:
        auth = f"{quote(parsed.username or '', safe='')}:{quote(parsed.password, safe='')}@"
    elif parsed.username:
        auth = f"{quote(parsed.username, safe='')}@"
    return ";".join(f"sentinel://{auth}{_netloc(h, p)}/{parsed.db}" for h, p in parsed.sentinels)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def kombu_transport_options(parsed: SentinelURL) -> dict:
    """``master_name`` (and ``sentinel_kwargs`` for a sentinel password) for kombu and the backend."""
    opts: dict = {"master_name": parsed.master}
    if parsed.sentinel_password:
        opts["sentinel_kwargs"] = {"password": parsed.sentinel_password}
    return opts


def redis_url_of_broker(broker_url: str, transport_options: dict | None) -> str:
    """The URL Sentinel's client uses for a broker: kombu's ``sentinel://`` form (with
    ``master_name`` in ``transport_options``) back to ``redis+sentinel://``; any other URL as it is."""
    if not broker_url.lower().startswith("sentinel://"):
        return broker_url
    opts = transport_options or {}
    hosts, auth, db = [], "", "0"
    for part in broker_url.split(";"):
        rest = part.strip()[len("sentinel://"):]
        netloc, _, path = rest.partition("/")
        if "@" in netloc:
            auth, _, netloc = netloc.rpartition("@")
            auth += "@"
        hosts.append(netloc)
        db = path or db
    query = ""
    sentinel_password = (opts.get("sentinel_kwargs") or {}).get("password")
    if sentinel_password:
        query = f"?sentinel_password={quote(sentinel_password, safe='')}"
    master = opts.get("master_name")
    if not master:
        raise RedisURLError(redact(broker_url), "no 'master_name' in the broker transport options")
    return f"{SCHEME}://{auth}{','.join(hosts)}/{quote(master, safe='')}/{db}{query}"
