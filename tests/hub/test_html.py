"""The HTML view at html_url: rendered Markdown, coloured labels, hostile text kept inert."""

from __future__ import annotations

import requests

from sentinel_celery.github import render

from .helpers import call

HOSTILE_BODY = (
    "Lease lost on **worker-3**.\n\n<img src=x onerror=alert(1)>\n\n"
    "[click](javascript:alert(2))\n\n<script>alert(3)</script>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
)


def page(url: str) -> requests.Response:
    return requests.get(url, headers={"Accept": "text/html"}, timeout=10)


def test_issue_page_renders_markdown_and_escapes_raw_html(github_hub):
    repo = github_hub.client().get_repo(github_hub.repo)
    repo.create_label("<b>x</b>", "d73a4b")
    issue = repo.create_issue('Title <script>alert("t")</script>', body=HOSTILE_BODY, labels=["bug", "<b>x</b>"])
    issue.create_comment("Comment with `code` and <iframe src=//evil>")
    response = page(issue.html_url)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    html = response.text
    assert "<strong>worker-3</strong>" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img" not in html and "<script>" not in html and "<iframe" not in html
    assert 'href="javascript:' not in html
    assert "&lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt;" in html  # title
    assert "<table>" in html and "<code>code</code>" in html
    assert "&lt;iframe src=//evil&gt;" in html
    assert 'style="background:#d73a4a;color:#fff"' in html and ">bug</span>" in html  # coloured chip
    assert "&lt;b&gt;x&lt;/b&gt;</span>" in html and "<b>x</b>" not in html
    assert '<span class="state open">open</span>' in html


def test_html_comments_are_hidden_and_task_lists_are_checkboxes(github_hub):
    marker = render.marker("issue", 7)  # what the mirror puts at the top of its bodies
    body = f"{marker}\n### Checklist\n\n- [ ] deploy\n- [x] build\n\nsee <!-- an aside --> logs\n"
    repo = github_hub.client().get_repo(github_hub.repo)
    issue = repo.create_issue("checklist", body=body)
    issue.create_comment(f"{marker}\n```\n<!-- shown in code -->\n```")
    html = page(issue.html_url).text
    assert "sentinel:issue" not in html and "an aside" not in html and "&lt;!--" not in html.split("<pre>")[0]
    assert "<p>see  logs</p>" in html
    assert '<input class="task-list-item-checkbox" disabled="disabled" type="checkbox"> deploy' in html
    assert '<input class="task-list-item-checkbox" checked="checked" disabled="disabled" type="checkbox"> build' in html
    assert "[ ]" not in html and "[x]" not in html
    assert "<code>&lt;!-- shown in code --&gt;" in html  # code shows what it holds


def test_issue_list_page_and_state_filter(github_hub):
    repo = github_hub.client().get_repo(github_hub.repo)
    repo.create_issue("still open")
    repo.create_issue("<i>done</i>").edit(state="closed")
    open_page = page(f"{github_hub.base_url}/acme/app/issues").text
    assert "still open" in open_page and "done" not in open_page
    closed_page = page(f"{github_hub.base_url}/acme/app/issues?state=closed").text
    assert "&lt;i&gt;done&lt;/i&gt;" in closed_page and "still open" not in closed_page
    assert page(f"{github_hub.base_url}/acme/app").status_code == 200
    assert "acme/app" in page(f"{github_hub.base_url}/").text


def test_html_view_needs_no_token_and_404s_cleanly(github_hub):
    assert page(f"{github_hub.base_url}/acme/app/issues/42").status_code == 404
    assert page(f"{github_hub.base_url}/acme/missing/issues").status_code == 404
    api_client_404 = call(github_hub, "GET", "/acme/missing/issues")
    assert api_client_404.status_code == 404 and api_client_404.json()["message"] == "Not Found"
    assert github_hub.requests(path_prefix="/acme/app/issues") == []  # the view is not in the API log


def test_download_url_serves_raw_file_as_text(github_hub):
    repo = github_hub.client().get_repo(github_hub.repo)
    repo.create_file("docs/x.html", "add", "<h1>not rendered</h1>")
    content = repo.get_contents("docs/x.html")
    raw = requests.get(content.download_url, timeout=10)
    assert raw.status_code == 200 and raw.text == "<h1>not rendered</h1>"
    assert raw.headers["Content-Type"].startswith("text/plain")
    assert raw.headers["X-Content-Type-Options"] == "nosniff"
