"""Markdown to HTML for the HTML view, shown as GitHub shows issue bodies and comments, but inert.

Owns :func:`render_markdown`: CommonMark with tables and strikethrough
(markdown-it-py) and task lists (``- [ ]`` / ``- [x]`` as disabled checkboxes,
mdit-py-plugins). Raw HTML in the source is shown as text, except HTML
comments, which are hidden, as on GitHub (the mirror's ``<!-- sentinel:... -->``
markers among them); inside code they stay visible. Unsafe link schemes
(``javascript:`` ...) are not turned into links.
"""

from __future__ import annotations

import html
import re
from typing import Any, Sequence

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from mdit_py_plugins.tasklists import tasklists_plugin

_COMMENT = re.compile(r"<!--.*?-->", re.S)


def _raw_html_as_text(state: StateCore) -> None:
    """Mark the raw HTML the parser found, before the task-list rule adds its own checkbox HTML."""
    for token in state.tokens:
        if token.type == "html_block":
            token.type = "raw_html_block"
        for child in token.children or ():
            if child.type == "html_inline":
                child.type = "raw_html_inline"


def _render_raw_html(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    text = _COMMENT.sub("", token.content)
    if not text.strip():
        return ""
    escaped = html.escape(text, quote=False)
    return f"<p>{escaped.strip()}</p>\n" if token.block else escaped


_markdown = (
    MarkdownIt("commonmark", {"html": True, "linkify": False})
    .enable(["table", "strikethrough"])
    .use(tasklists_plugin)  # its rule runs after "inline"; ours is put between the two below
)
_markdown.core.ruler.after("inline", "raw_html_as_text", _raw_html_as_text)
_markdown.add_render_rule("raw_html_block", _render_raw_html)
_markdown.add_render_rule("raw_html_inline", _render_raw_html)


def render_markdown(text: str | None) -> str:
    """Markdown to HTML: comments hidden, other raw HTML escaped, task lists as disabled checkboxes."""
    return _markdown.render(text or "")
