"""Hostile text from tasks is neutralised before it reaches GitHub; the write budget paces requests."""
from __future__ import annotations

import re
import time

import pytest

from sentinel_celery.github import render
from sentinel_celery.github.budget import Budget, Pace
from sentinel_celery.state import outbox
from tests.github_support import flush_until, sentinel_comments, shared_with_mirror

ZWJ = "\u200d"
HOSTILE = "@org/team <img src=x onerror=alert(1)> | --- | #123 [x](javascript:alert(1)) ![p](http://t/p.png)"


@pytest.fixture
def shared_config():
    return shared_with_mirror()


def outside_code(markdown: str) -> str:
    """The text of a Markdown document minus its fenced code blocks (where nothing renders)."""
    return re.sub(r"(`{3,})text\n.*?\n\1", "", markdown, flags=re.S)


def test_inline_text_defuses_mentions_references_html_and_links():
    out = render.text(HOSTILE)
    assert "@org" not in out and f"@{ZWJ}org" in out
    assert "#123" not in out and f"#{ZWJ}123" in out
    assert "<img" not in out and "&lt;img" in out
    assert "](" not in out.replace("\\](", "")  # link syntax escaped
    assert "![" not in out.replace("\\![", "").replace("!\\[", "")


def test_table_cells_cannot_break_the_table():
    table = render.table(["a", "b"], [["x | --- | y\nz", "ok"], [HOSTILE, "end"]])
    lines = table.splitlines()
    assert len(lines) == 4  # header, rule, two rows: newlines folded
    for line in lines[2:]:
        assert len(re.findall(r"(?<!\\)\|", line)) == 3  # only the table's own pipes are unescaped


def test_code_block_fence_cannot_be_closed_from_inside_and_length_is_bounded():
    evil = "x\n```\n@org/team <b>pwned</b>\n````\n"
    block = render.code(evil)
    fence = block.split("text", 1)[0]
    assert len(fence) == 5 and block.endswith("\n" + fence)
    assert block.count(fence) == 2
    big = render.code("A" * 10_000 + "THE END", limit=3000)
    assert len(big) < 3100 and big.rstrip("`").rstrip().endswith("THE END")
    assert len(render.text("B" * 10_000)) < 400
    assert len(render.plain("@everyone " * 100, 140)) <= 140


def test_hostile_task_output_is_neutralised_in_github(mirror, gh_repo, github_hub):
    n = gh_repo.create_issue("job").number
    ten_kb = ("line of output with @org/team and <script>x</script> | --- |\n" * 200)[:10_000]
    now = int(time.time() * 1000)
    outbox.append("task", "h-1", {"state": "STARTED", "github_issue": n, "worker": "w1 | --- | @org/ops",
                                  "task": "workers.build.run", "task_type": "build", "queue": "<img src=x>",
                                  "at": now})
    outbox.append("task", "h-1", {"state": "FAILURE", "github_issue": n, "error": ten_kb + HOSTILE,
                                  "error_type": "<img src=x>@org/team", "at": now + 1}, final=True)
    flush_until(mirror, lambda: sentinel_comments(gh_repo, n), message="the status comment")
    body = sentinel_comments(gh_repo, n)[0].body
    prose = outside_code(body)
    assert "@org" not in prose and "<img" not in prose and "<script" not in prose
    assert f"@{ZWJ}org/ops" in prose and "&lt;img src=x&gt;" in prose
    table = [line for line in prose.splitlines() if line.startswith("|")]
    assert table and all(len(re.findall(r"(?<!\\)\|", line)) == 3 for line in table)
    assert len(body) < 6000  # 10 kB of error is bounded to its tail
    assert "alert(1)" in body  # ... which is kept, inside a code block


def test_budget_paces_writes_and_obeys_retry_after_and_reset(rclient, namespace):
    clock = [1000.0]
    budget = Budget(rclient, namespace, Pace(per_second=1, per_minute=3, per_hour=100, reserve=10),
                    clock=lambda: clock[0])
    assert budget.delay(write=True)[0] == 0
    budget.note("POST", 201, {"x-ratelimit-remaining": "4000", "x-ratelimit-reset": "5000"})
    wait, reason = budget.delay(write=True)
    assert wait == pytest.approx(1.0) and reason == "write pacing"
    assert budget.delay(write=False)[0] == 0  # reads are not paced like writes
    for _ in range(2):
        clock[0] += 1.0
        budget.note("PATCH", 200, {})
    clock[0] += 1.0
    wait, reason = budget.delay(write=True)
    assert reason == "maxWritesPerMinute" and wait == pytest.approx(57.0)
    budget.note("POST", 403, {"retry-after": "30", "x-ratelimit-remaining": "3999"})
    assert budget.delay(write=False) == (pytest.approx(30.0), "secondary rate limit: retry-after 30s")
    clock[0] += 31
    budget.note("GET", 403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(clock[0] + 600)})
    wait, reason = budget.delay(write=False)
    assert wait == pytest.approx(600) and "x-ratelimit-reset" in reason
    successor = Budget(rclient, namespace, Pace(), clock=lambda: clock[0]).load()  # the next leader knows too
    assert successor.delay(write=False)[0] == pytest.approx(600)
    clock[0] += 601
    budget.note("GET", 200, {"x-ratelimit-remaining": "5", "x-ratelimit-reset": str(clock[0] + 100)})
    wait, reason = budget.delay(write=False)
    assert wait == pytest.approx(20.0) and "low" in reason  # 5 left for 100 s: one every 20 s
