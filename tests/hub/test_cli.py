"""The ``sentinel hub`` command, run as a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

import requests
from click.testing import CliRunner

from sentinel_celery.cli.hub import hub_command

LAUNCH = "from sentinel_celery.cli.hub import hub_command; hub_command(prog_name='sentinel hub')"


@contextmanager
def running_hub(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, list[str]]]:
    """Start the command on a free port; yield (base_url, lines printed at start)."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", LAUNCH, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        lines = []
        while True:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"hub exited early: {proc.stderr.read()}")
            lines.append(line.rstrip("\n"))
            if line.startswith("admin API:"):
                break
        match = re.match(r"^sentinel hub: (http://127\.0\.0\.1:\d+) ", lines[0])
        assert match, lines
        yield match.group(1), lines
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr.read()


def test_given_token_is_accepted_and_never_printed(tmp_path):
    with running_hub("--repo", "acme/app", "--repo", "acme/web", "--token", "s3cret-token") as (url, lines):
        assert not any("s3cret-token" in line for line in lines)
        assert not any(line.startswith("token:") for line in lines)
        assert f"repo: acme/web  issues: {url}/acme/web/issues" in lines
        me = requests.get(f"{url}/user", headers={"Authorization": "token s3cret-token"}, timeout=5)
        assert me.json()["login"] == "acme"
        assert requests.get(
            f"{url}/api/v3/repos/acme/web", headers={"Authorization": "Bearer s3cret-token"}, timeout=5
        ).ok


def test_token_from_environment(tmp_path):
    with running_hub(env={"SENTINEL_HUB_TOKEN": "env-token"}) as (url, lines):
        assert not any("env-token" in line for line in lines)
        assert requests.get(f"{url}/repos/acme/app", headers={"Authorization": "token env-token"}, timeout=5).ok


def test_generated_token_is_printed_and_state_persists_in_the_db_file(tmp_path):
    db = str(tmp_path / "hub.sqlite")
    with running_hub("--db", db, "--repo", "acme/app") as (url, lines):
        token = next(line.split(": ", 1)[1] for line in lines if line.startswith("token: "))
        created = requests.post(
            f"{url}/repos/acme/app/issues",
            json={"title": "survives restarts"},
            headers={"Authorization": f"token {token}"},
            timeout=5,
        )
        assert created.status_code == 201
    with running_hub("--db", db, "--token", "second-run") as (url, _):
        issues = requests.get(f"{url}/repos/acme/app/issues", headers={"Authorization": "token second-run"}, timeout=5)
        assert [i["title"] for i in issues.json()] == ["survives restarts"]


def test_fault_flags_and_tokens_file(tmp_path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                "tokens": [
                    {"token": "admin-t", "access": "admin", "label": "owner"},
                    {"token": "ro-t", "access": "read", "login": "viewer", "label": "reader"},
                ]
            }
        )
    )
    with running_hub("--tokens-file", str(tokens), "--exhaust-rate-limit", "--writes-per-minute", "5") as (url, lines):
        assert any(line.startswith("faults: ") and "exhaust_rate_limit" in line for line in lines)
        blocked = requests.get(f"{url}/repos/acme/app", headers={"Authorization": "token ro-t"}, timeout=5)
        assert blocked.status_code == 403 and blocked.json()["message"].startswith("API rate limit exceeded")
        cleared = requests.post(
            f"{url}/_hub/faults",
            json={"exhaust_rate_limit": False},
            headers={"Authorization": "token admin-t"},
            timeout=5,
        )
        assert cleared.json()["exhaust_rate_limit"] is False
        write = requests.post(
            f"{url}/repos/acme/app/issues", json={"title": "x"}, headers={"Authorization": "token ro-t"}, timeout=5
        )
        assert write.status_code == 403


def test_non_loopback_host_is_refused():
    result = CliRunner().invoke(hub_command, ["--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code != 0
    assert "loopback" in result.output
