"""Neutralised Markdown: text from tasks (arguments, output, errors) made safe to show in GitHub.

Anything a task produced can contain ``@org/team`` (would notify a team), ``#123`` or ``GH-1``
(would cross-reference an issue), raw HTML (``<img src=x>``), Markdown that breaks a table (``|``,
newlines) or links and images, and can be very long. The helpers here:

* :func:`text`  — inline text: HTML escaped, mentions and references defused with a zero-width
  joiner (``@\u200dorg``, ``#\u200d123``), Markdown punctuation backslash-escaped, bounded;
* :func:`cell`  — the same for a table cell, with ``|`` escaped and newlines folded;
* :func:`code`  — a fenced code block (nothing inside is rendered or notifies), fence longer
  than any backtick run in the text, bounded;
* :func:`sha`   — a commit sha if the value is one (7–40 hex; exactly 40 for statuses), else None:
  a "sha" that is a path or a URL never reaches a URL or a link;
* :func:`marker` — the hidden ``<!-- sentinel:... -->`` comment that finds an object again.

Any text renders: a character that cannot be encoded as UTF-8 (a lone surrogate such as
``"\\udc80"``, what ``os.fsdecode`` makes of undecodable bytes) becomes U+FFFD.

Owns no Redis keys.
"""
from __future__ import annotations

import hashlib
import re
import time

ZWJ = "\u200d"
MAX_INLINE = 300
MAX_CELL = 120
MAX_CODE = 3000
MAX_BODY = 60000  # GitHub refuses bodies over 65,536 characters

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_MENTION = re.compile(r"@(?=[A-Za-z0-9_-])")
_REFERENCE = re.compile(r"(#|GH-|gh-)(?=[0-9])")
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()!|~])")
_SHA = re.compile(r"[0-9a-fA-F]{7,40}")
_MARKER = re.compile(r"<!-- sentinel:([a-z-]+):(.*?) -->")


def _clean(value) -> str:
    """``value`` as text without control characters, every surrogate replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", _CONTROL.sub("", "" if value is None else str(value)))


def _bound(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    return value[:limit] + f" … ({len(value) - limit} more characters)"


def _defuse(value: str) -> str:
    value = _MENTION.sub("@" + ZWJ, value)
    return _REFERENCE.sub(lambda m: m.group(1) + ZWJ, value)


def text(value, limit: int = MAX_INLINE) -> str:
    """Inline text safe for a Markdown paragraph."""
    value = _clean(value)
    value = _bound(value, limit)
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    value = _MARKDOWN.sub(r"\\\1", value)
    return _defuse(value)


def cell(value, limit: int = MAX_CELL) -> str:
    """Text safe inside one cell of a Markdown table."""
    value = " ".join(_clean(value).split())  # newlines and runs of spaces: one space
    return text(value, limit) or " "


def code(value, limit: int = MAX_CODE, *, tail: bool = True) -> str:
    """A fenced code block; with ``tail`` a long text keeps its end (where errors are)."""
    value = _clean(value).replace("\r\n", "\n")
    if len(value) > limit:
        cut = len(value) - limit
        value = (f"… ({cut} earlier characters)\n" + value[-limit:]) if tail else _bound(value, limit)
    longest = max((len(m) for m in re.findall(r"`+", value)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{value}\n{fence}"


def plain(value, limit: int = 140) -> str:
    """Plain text for fields GitHub does not render (commit status descriptions, titles)."""
    value = _defuse(" ".join(_clean(value).split()))
    return value if len(value) <= limit else value[:limit - 1] + "…"


def markdown(value, limit: int = MAX_BODY // 2) -> str:
    """Trusted Markdown from Sentinel itself (alerts): raw HTML and mentions still neutralised."""
    value = _clean(value)
    return _bound(_defuse(value.replace("<", "&lt;")), limit)  # bounded last: escaping can quadruple the length


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; every value goes through :func:`cell`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def sha(value, *, full: bool = False) -> str | None:
    """``value`` lower-cased if it is a commit sha: 7–40 hex characters, or exactly 40 with ``full``."""
    if not isinstance(value, str) or not _SHA.fullmatch(value) or (full and len(value) != 40):
        return None
    return value.lower()


def marker(kind: str, key) -> str:
    """Hidden marker for an object (``kind`` is a fixed word; ``key`` is made harmless)."""
    safe = re.sub(r"[^A-Za-z0-9_.:@#/+=-]", "_", str(key))[:200]  # also drops surrogates
    return f"<!-- sentinel:{kind}:{safe} -->"


def find_markers(body: str | None) -> list[tuple[str, str]]:
    return _MARKER.findall(body or "")


def bound_body(body: str) -> str:
    body = _SURROGATE.sub("\ufffd", body)
    return body if len(body) <= MAX_BODY else body[:MAX_BODY] + "\n\n… (truncated)"


def digest(value: str) -> str:
    return hashlib.sha1(value.encode("utf-8", "replace")).hexdigest()[:16]


def when(ms) -> str:
    """A UTC time for people, from epoch milliseconds (or seconds)."""
    if not ms:
        return "-"
    seconds = float(ms) / 1000.0 if float(ms) > 1e11 else float(ms)
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def bucket(n: int | None) -> str:
    """A count rounded so the dashboard does not change with every message: 0..9, ~10, ~20, ~300..."""
    if n is None:
        return "-"
    n = int(n)
    if n < 10:
        return str(n)
    digits = len(str(n)) - 1
    return f"~{(n // 10 ** digits) * 10 ** digits}"


def duration(seconds) -> str:
    if seconds in (None, ""):
        return "-"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes} min {sec} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
