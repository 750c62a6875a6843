"""The hub's state in SQLite: the schema, users and repositories.

Owns the tables (a :class:`Store` is the :class:`~.db.Database` with them
created) and the entities everything else hangs from: users and
repositories, created with GitHub's default labels and an initial commit on
their default branch. The connection and transactions are :mod:`.db`'s.
"""

from __future__ import annotations

import re
import sqlite3
import time

from .db import Database
from .git import GitRepo, Signature, TreeEntry
from .timestamps import iso

SCHEMA_VERSION = 1
_FULL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    login TEXT NOT NULL UNIQUE COLLATE NOCASE,
    type TEXT NOT NULL DEFAULT 'User',
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS repos (
    id INTEGER PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    full_name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    description TEXT,
    private INTEGER NOT NULL DEFAULT 1,
    default_branch TEXT NOT NULL DEFAULT 'main',
    next_number INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    pushed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS collaborators (
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    permission TEXT NOT NULL DEFAULT 'push',
    PRIMARY KEY (repo_id, user_id)
);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY,
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    name TEXT NOT NULL COLLATE NOCASE,
    color TEXT NOT NULL,
    description TEXT,
    is_default INTEGER NOT NULL DEFAULT 0,
    UNIQUE (repo_id, name)
);
CREATE TABLE IF NOT EXISTS issues (
    id INTEGER PRIMARY KEY,
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    number INTEGER NOT NULL,
    title TEXT NOT NULL,
    body TEXT,
    state TEXT NOT NULL DEFAULT 'open',
    state_reason TEXT,
    user_id INTEGER NOT NULL REFERENCES users(id),
    app_id INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    closed_at TEXT,
    closed_by_id INTEGER REFERENCES users(id),
    UNIQUE (repo_id, number)
);
CREATE TABLE IF NOT EXISTS issue_labels (
    issue_id INTEGER NOT NULL REFERENCES issues(id),
    label_id INTEGER NOT NULL REFERENCES labels(id),
    PRIMARY KEY (issue_id, label_id)
);
CREATE TABLE IF NOT EXISTS issue_assignees (
    issue_id INTEGER NOT NULL REFERENCES issues(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    PRIMARY KEY (issue_id, user_id)
);
CREATE TABLE IF NOT EXISTS comments (
    id INTEGER PRIMARY KEY,
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    issue_id INTEGER NOT NULL REFERENCES issues(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    app_id INTEGER,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS comments_by_issue ON comments (issue_id, id);
CREATE TABLE IF NOT EXISTS issue_events (
    id INTEGER PRIMARY KEY,
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    issue_id INTEGER NOT NULL REFERENCES issues(id),
    actor_id INTEGER NOT NULL REFERENCES users(id),
    event TEXT NOT NULL,
    label_name TEXT,
    label_color TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS issue_events_by_repo ON issue_events (repo_id, id);
CREATE TABLE IF NOT EXISTS git_objects (
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    sha TEXT NOT NULL,
    type TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (repo_id, sha)
);
CREATE TABLE IF NOT EXISTS git_refs (
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    name TEXT NOT NULL,
    sha TEXT NOT NULL,
    PRIMARY KEY (repo_id, name)
);
CREATE TABLE IF NOT EXISTS statuses (
    id INTEGER PRIMARY KEY,
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    sha TEXT NOT NULL,
    state TEXT NOT NULL,
    target_url TEXT,
    description TEXT,
    context TEXT NOT NULL,
    creator_id INTEGER NOT NULL REFERENCES users(id),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS statuses_by_sha ON statuses (repo_id, sha, id);
CREATE TABLE IF NOT EXISTS check_runs (
    id INTEGER PRIMARY KEY,
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    head_sha TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    conclusion TEXT,
    details_url TEXT,
    external_id TEXT,
    started_at TEXT,
    completed_at TEXT,
    output_title TEXT,
    output_summary TEXT,
    output_text TEXT,
    app_id INTEGER NOT NULL,
    app_slug TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS check_runs_by_sha ON check_runs (repo_id, head_sha, id);
"""

DEFAULT_LABELS = (
    ("bug", "d73a4a", "Something isn't working"),
    ("documentation", "0075ca", "Improvements or additions to documentation"),
    ("duplicate", "cfd3d7", "This issue or pull request already exists"),
    ("enhancement", "a2eeef", "New feature or request"),
    ("good first issue", "7057ff", "Good for newcomers"),
    ("help wanted", "008672", "Extra attention is needed"),
    ("invalid", "e4e669", "This doesn't seem right"),
    ("question", "d876e3", "Further information is requested"),
    ("wontfix", "ffffff", "This will not be worked on"),
)


class Store(Database):
    def __init__(self, path: str = ":memory:") -> None:
        super().__init__(path)
        with self.lock:
            self.executescript(SCHEMA)
            self.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    # users ---------------------------------------------------------------
    def ensure_user(self, login: str, type: str = "User") -> int:
        with self.tx():
            row = self.one("SELECT id FROM users WHERE login = ?", (login,))
            if row is not None:
                return int(row["id"])
            return self.insert("INSERT INTO users (login, type, created_at) VALUES (?, ?, ?)", (login, type, iso()))

    def user(self, user_id: int) -> sqlite3.Row:
        row = self.one("SELECT * FROM users WHERE id = ?", (user_id,))
        assert row is not None, user_id
        return row

    def user_by_login(self, login: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM users WHERE login = ?", (login,))

    # repositories --------------------------------------------------------
    def repo(self, owner: str, name: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM repos WHERE full_name = ?", (f"{owner}/{name}",))

    def repo_by_id(self, repo_id: int) -> sqlite3.Row:
        row = self.one("SELECT * FROM repos WHERE id = ?", (repo_id,))
        assert row is not None, repo_id
        return row

    def repos(self) -> list[sqlite3.Row]:
        return self.all("SELECT * FROM repos ORDER BY id")

    def create_repo(
        self, full_name: str, *, description: str | None = None, default_branch: str = "main"
    ) -> sqlite3.Row:
        """Create ``owner/name`` (and its owner) if missing, with default labels and an initial commit."""
        if not _FULL_NAME.match(full_name):
            raise ValueError(f"repository must be 'owner/name' (letters, digits, '-', '_', '.'), not {full_name!r}")
        owner, _, name = full_name.partition("/")
        with self.tx():
            existing = self.repo(owner, name)
            if existing is not None:
                return existing
            owner_id = self.ensure_user(owner)
            now = iso()
            repo_id = self.insert(
                "INSERT INTO repos (owner_id, name, full_name, description, default_branch, created_at, updated_at, pushed_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (owner_id, name, f"{owner}/{name}", description, default_branch, now, now, now),
            )
            self.execute(
                "INSERT INTO collaborators (repo_id, user_id, permission) VALUES (?, ?, 'admin')", (repo_id, owner_id)
            )
            for label, color, text in DEFAULT_LABELS:
                self.execute(
                    "INSERT INTO labels (repo_id, name, color, description, is_default) VALUES (?, ?, ?, ?, 1)",
                    (repo_id, label, color, text),
                )
            git = GitRepo(self, repo_id)
            blob = git.put("blob", f"# {name}\n".encode())
            tree = git.with_path(None, "README.md", TreeEntry("100644", "README.md", blob))
            signature = Signature(owner, f"{owner}@users.noreply.hub.local", int(time.time()))
            commit = git.make_commit(tree, [], "Initial commit", signature)
            git.set_ref(f"refs/heads/{default_branch}", commit)
            return self.repo_by_id(repo_id)

    def add_collaborator(self, repo_id: int, user_id: int, permission: str = "push") -> bool:
        """Add (or re-permission) a collaborator; True if they were not one before."""
        with self.tx():
            existed = self.one("SELECT 1 FROM collaborators WHERE repo_id = ? AND user_id = ?", (repo_id, user_id))
            self.execute(
                "INSERT INTO collaborators (repo_id, user_id, permission) VALUES (?, ?, ?) "
                "ON CONFLICT (repo_id, user_id) DO UPDATE SET permission = excluded.permission",
                (repo_id, user_id, permission),
            )
            return existed is None

    def permission(self, repo_id: int, user_id: int) -> str | None:
        row = self.one("SELECT permission FROM collaborators WHERE repo_id = ? AND user_id = ?", (repo_id, user_id))
        return row["permission"] if row else None

    def touch_repo(self, repo_id: int, pushed: bool = False) -> None:
        now = iso()
        if pushed:
            self.execute("UPDATE repos SET updated_at = ?, pushed_at = ? WHERE id = ?", (now, now, repo_id))
        else:
            self.execute("UPDATE repos SET updated_at = ? WHERE id = ?", (now, repo_id))
