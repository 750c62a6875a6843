"""A small git object database inside the hub's SQLite store.

Owns git's object formats (blob, tree, commit; SHA-1 over ``"<type> <len>\\0"``
plus the body, so shas are the ones ``git`` itself would compute) and
:class:`GitRepo`, the operations on the ``git_objects`` and ``git_refs``
tables that repository creation and the contents, git-data, commits and
statuses endpoints share: read/write objects, resolve refs, replace one path
in a tree, make commits and test ancestry for fast-forward updates.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .db import Database

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
MODES = {"100644": "blob", "100755": "blob", "120000": "blob", "040000": "tree", "160000": "commit"}


def hash_object(kind: str, body: bytes) -> str:
    return hashlib.sha1(f"{kind} {len(body)}\0".encode() + body).hexdigest()


def normalise_mode(mode: str) -> str:
    return "040000" if mode in ("40000", "040000") else mode


@dataclass(frozen=True)
class TreeEntry:
    mode: str  # as the API spells it: "100644", "040000", ...
    name: str
    sha: str

    @property
    def type(self) -> str:
        return MODES.get(self.mode, "blob")

    def sort_key(self) -> bytes:
        # git orders a directory as if its name ended with "/"
        return (self.name + "/" if self.type == "tree" else self.name).encode()


def encode_tree(entries: list[TreeEntry]) -> bytes:
    out = bytearray()
    for entry in sorted(entries, key=TreeEntry.sort_key):
        mode = "40000" if entry.mode == "040000" else entry.mode
        out += f"{mode} {entry.name}\0".encode() + bytes.fromhex(entry.sha)
    return bytes(out)


def decode_tree(body: bytes) -> list[TreeEntry]:
    entries, pos = [], 0
    while pos < len(body):
        nul = body.index(b"\0", pos)
        mode, _, name = body[pos:nul].decode().partition(" ")
        sha = body[nul + 1 : nul + 21].hex()
        entries.append(TreeEntry(normalise_mode(mode), name, sha))
        pos = nul + 21
    return entries


@dataclass(frozen=True)
class Signature:
    name: str
    email: str
    date: int  # epoch seconds, UTC

    def encode(self) -> str:
        return f"{self.name} <{self.email}> {self.date} +0000"

    @classmethod
    def decode(cls, text: str) -> "Signature":
        match = re.match(r"^(.*) <(.*)> (\d+) [+-]\d{4}$", text)
        if match is None:
            return cls(text, "", 0)
        return cls(match.group(1), match.group(2), int(match.group(3)))


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    tree: str
    parents: tuple[str, ...]
    author: Signature
    committer: Signature
    message: str


def encode_commit(tree: str, parents: list[str], author: Signature, committer: Signature, message: str) -> bytes:
    lines = [f"tree {tree}"] + [f"parent {p}" for p in parents]
    lines += [f"author {author.encode()}", f"committer {committer.encode()}", "", message]
    return "\n".join(lines).encode()


def decode_commit(sha: str, body: bytes) -> CommitInfo:
    header, _, message = body.decode().partition("\n\n")
    tree, parents, author, committer = "", [], Signature("", "", 0), Signature("", "", 0)
    for line in header.splitlines():
        key, _, value = line.partition(" ")
        if key == "tree":
            tree = value
        elif key == "parent":
            parents.append(value)
        elif key == "author":
            author = Signature.decode(value)
        elif key == "committer":
            committer = Signature.decode(value)
    return CommitInfo(sha, tree, tuple(parents), author, committer, message)


class GitRepo:
    """Git operations on one repository's objects and refs. Call inside ``db.tx()``."""

    def __init__(self, db: Database, repo_id: int) -> None:
        self.db = db
        self.repo_id = repo_id

    # objects -------------------------------------------------------------
    def put(self, kind: str, body: bytes) -> str:
        sha = hash_object(kind, body)
        self.db.execute(
            "INSERT OR IGNORE INTO git_objects (repo_id, sha, type, data) VALUES (?, ?, ?, ?)",
            (self.repo_id, sha, kind, body),
        )
        return sha

    def get(self, sha: str) -> tuple[str, bytes] | None:
        row = self.db.one("SELECT type, data FROM git_objects WHERE repo_id = ? AND sha = ?", (self.repo_id, sha))
        return (row["type"], bytes(row["data"])) if row else None

    def typed(self, sha: str, kind: str) -> bytes | None:
        found = self.get(sha)
        return found[1] if found and found[0] == kind else None

    def tree(self, sha: str) -> list[TreeEntry] | None:
        body = self.typed(sha, "tree")
        return None if body is None else decode_tree(body)

    def commit(self, sha: str) -> CommitInfo | None:
        body = self.typed(sha, "commit")
        return None if body is None else decode_commit(sha, body)

    def make_commit(
        self, tree: str, parents: list[str], message: str, author: Signature, committer: Signature | None = None
    ) -> str:
        return self.put("commit", encode_commit(tree, parents, author, committer or author, message))

    # refs ----------------------------------------------------------------
    def ref(self, name: str) -> str | None:
        row = self.db.one("SELECT sha FROM git_refs WHERE repo_id = ? AND name = ?", (self.repo_id, name))
        return row["sha"] if row else None

    def set_ref(self, name: str, sha: str) -> None:
        self.db.execute(
            "INSERT INTO git_refs (repo_id, name, sha) VALUES (?, ?, ?) "
            "ON CONFLICT (repo_id, name) DO UPDATE SET sha = excluded.sha",
            (self.repo_id, name, sha),
        )

    def delete_ref(self, name: str) -> bool:
        cur = self.db.execute("DELETE FROM git_refs WHERE repo_id = ? AND name = ?", (self.repo_id, name))
        return cur.rowcount > 0

    def refs(self, prefix: str = "refs/") -> list[tuple[str, str]]:
        rows = self.db.all(
            "SELECT name, sha FROM git_refs WHERE repo_id = ? AND substr(name, 1, ?) = ? ORDER BY name",
            (self.repo_id, len(prefix), prefix),
        )
        return [(row["name"], row["sha"]) for row in rows]

    def resolve_commit(self, refish: str) -> str | None:
        """A commit sha from a full sha, a branch, a tag or a full ref name."""
        refish = refish.strip()
        if SHA_RE.match(refish.lower()):
            return refish.lower() if self.typed(refish.lower(), "commit") is not None else None
        for name in (refish, f"refs/heads/{refish}", f"refs/tags/{refish}"):
            sha = self.ref(name) if name.startswith("refs/") else None
            if sha is not None:
                return sha
        if len(refish) >= 7 and re.match(r"^[0-9a-f]+$", refish):
            rows = self.db.all(
                "SELECT sha FROM git_objects WHERE repo_id = ? AND type = 'commit' AND substr(sha, 1, ?) = ?",
                (self.repo_id, len(refish), refish),
            )
            if len(rows) == 1:
                return rows[0]["sha"]
        return None

    # trees ---------------------------------------------------------------
    def lookup(self, tree_sha: str, path: str) -> TreeEntry | None:
        """The entry at ``path`` under a tree; the tree itself for an empty path."""
        parts = [p for p in path.split("/") if p]
        entry = TreeEntry("040000", "", tree_sha)
        for part in parts:
            if entry.type != "tree":
                return None
            children = self.tree(entry.sha) or []
            entry = next((e for e in children if e.name == part), None)  # type: ignore[assignment]
            if entry is None:
                return None
        return entry

    def with_path(self, tree_sha: str | None, path: str, new: TreeEntry | None) -> str:
        """A tree equal to ``tree_sha`` but with ``path`` set to ``new`` (or removed when None).

        ``new.name`` is ignored; the last segment of ``path`` names the entry.
        Directories left empty by a removal disappear, as in git.
        """
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise ValueError("empty path")
        return self._with_parts(tree_sha, parts, new) or self.put("tree", b"")

    def _with_parts(self, tree_sha: str | None, parts: list[str], new: TreeEntry | None) -> str | None:
        entries = {e.name: e for e in (self.tree(tree_sha) or [])} if tree_sha else {}
        head = parts[0]
        if len(parts) == 1:
            if new is None:
                entries.pop(head, None)
            else:
                entries[head] = TreeEntry(new.mode, head, new.sha)
        else:
            current = entries.get(head)
            sub = current.sha if current is not None and current.type == "tree" else None
            sub_sha = self._with_parts(sub, parts[1:], new)
            if sub_sha is None:
                entries.pop(head, None)
            else:
                entries[head] = TreeEntry("040000", head, sub_sha)
        if not entries:
            return None
        return self.put("tree", encode_tree(list(entries.values())))

    def walk(self, tree_sha: str, prefix: str = "") -> list[tuple[str, TreeEntry]]:
        """Every entry under a tree, depth first, with its full path."""
        out = []
        for entry in self.tree(tree_sha) or []:
            path = f"{prefix}{entry.name}"
            out.append((path, entry))
            if entry.type == "tree":
                out.extend(self.walk(entry.sha, path + "/"))
        return out

    # history -------------------------------------------------------------
    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        seen, todo = set(), [descendant]
        while todo:
            sha = todo.pop()
            if sha == ancestor:
                return True
            if sha in seen:
                continue
            seen.add(sha)
            info = self.commit(sha)
            if info is not None:
                todo.extend(info.parents)
        return False

    def history(self, start: str, limit: int = 10_000) -> list[CommitInfo]:
        """Commits reachable from ``start``, newest committer date first."""
        seen: set[str] = set()
        out: list[CommitInfo] = []
        todo = [start]
        while todo and len(out) < limit:
            sha = todo.pop()
            if sha in seen:
                continue
            seen.add(sha)
            info = self.commit(sha)
            if info is None:
                continue
            out.append(info)
            todo.extend(info.parents)
        out.sort(key=lambda c: c.committer.date, reverse=True)
        return out
