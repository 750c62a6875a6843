"""The ``sentinel hub`` command: run the hub in the foreground.

Owns :data:`hub_command` (a click command the main CLI registers as
``sentinel hub``). It prints the base URL and, only when it generated one,
the token; tokens given with ``--token``, ``SENTINEL_HUB_TOKEN`` or
``--tokens-file`` are never printed. ``--app ID:KEY_PATH:INSTALLATION_ID``
accepts a GitHub App whose installation covers the hub's repositories. ``--webhook URL`` (with
``--webhook-secret``) delivers the ``issues``, ``issue_comment``, ``label`` and ``push`` events of every
repository to URL; a tokens file's ``"webhooks"`` list sets hooks per repository.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from sentinel_celery.cli.common import PORT
from sentinel_celery.hub.app import Hub
from sentinel_celery.hub.ratelimit import Limits


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _parse_app(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[int, str, int]]:
    apps = []
    for value in values:
        app_id, _, rest = value.partition(":")
        key_path, _, installation_id = rest.rpartition(":")
        if not (app_id.isdigit() and key_path and installation_id.isdigit()):
            raise click.BadParameter(f"{value!r} is not ID:KEY_PATH:INSTALLATION_ID")
        apps.append((int(app_id), key_path, int(installation_id)))
    return apps


@click.command("hub")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to bind (loopback only).")
@click.option("--port", default=8765, show_default=True, type=PORT, help="Port; 0 picks a free one.")
@click.option("--db", default=":memory:", show_default=True, help="SQLite file for the hub's state.")
@click.option("--repo", "repos", multiple=True, help="owner/name to create if missing (repeatable).")
@click.option(
    "--token",
    "tokens",
    multiple=True,
    envvar="SENTINEL_HUB_TOKEN",
    help="Accept this token as a full-access token of the repo owner (repeatable; env SENTINEL_HUB_TOKEN).",
)
@click.option(
    "--tokens-file",
    type=click.Path(exists=True, dir_okay=False),
    envvar="SENTINEL_HUB_TOKENS_FILE",
    help="JSON file of tokens (login, kind user|app, access read|write|admin, repos) and GitHub Apps "
    "(app_id, slug, public_key_path, installations).",
)
@click.option(
    "--app",
    "apps",
    multiple=True,
    callback=_parse_app,
    metavar="ID:KEY_PATH:INSTALLATION_ID",
    help="Accept a GitHub App's JWTs, verified with the RSA key in KEY_PATH (public, or the private key's public "
    "half); its installation covers every repo (repeatable; the app is sentinel[bot], or sentinel-ID[bot] "
    "with several).",
)
@click.option(
    "--rate-limit", default=5000, show_default=True, type=int, help="Primary limit: requests per token per window."
)
@click.option("--rate-limit-window", default=3600.0, show_default=True, type=float, help="Primary window, seconds.")
@click.option(
    "--writes-per-minute", default=80, show_default=True, type=int, help="Secondary limit on POST/PATCH/PUT/DELETE."
)
@click.option(
    "--writes-per-hour", default=500, show_default=True, type=int, help="Secondary limit on POST/PATCH/PUT/DELETE."
)
@click.option("--max-concurrency", default=100, show_default=True, type=int, help="Requests in flight per token.")
@click.option("--secondary-status", default="403", show_default=True, type=click.Choice(["403", "429"]))
@click.option(
    "--fail-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1), help="Share of requests answered 5xx."
)
@click.option("--fail-status", default=502, show_default=True, type=click.Choice(["500", "502", "503", "504"]))
@click.option("--seed", type=int, default=None, help="Seed for --fail-rate draws.")
@click.option("--latency-ms", default=0.0, show_default=True, type=float, help="Latency added to every API request.")
@click.option(
    "--outage-seconds", default=0.0, show_default=True, type=float, help="Answer 503 to everything for N seconds."
)
@click.option("--exhaust-rate-limit", is_flag=True, help="Start with every token's primary rate limit used up.")
@click.option(
    "--webhook",
    "webhook_urls",
    multiple=True,
    metavar="URL",
    help="Deliver webhooks (issues, issue_comment, label, push) of every repo to URL (repeatable).",
)
@click.option(
    "--webhook-secret",
    envvar="SENTINEL_HUB_WEBHOOK_SECRET",
    default=None,
    help="Sign --webhook deliveries (X-Hub-Signature-256) with this secret (env SENTINEL_HUB_WEBHOOK_SECRET).",
)
@click.option("--quiet", is_flag=True, help="Print only the base URL (and a generated token).")
def hub_command(
    host: str,
    port: int,
    db: str,
    repos: tuple[str, ...],
    tokens: tuple[str, ...],
    tokens_file: str | None,
    apps: list[tuple[int, str, int]],
    rate_limit: int,
    rate_limit_window: float,
    writes_per_minute: int,
    writes_per_hour: int,
    max_concurrency: int,
    secondary_status: str,
    fail_rate: float,
    fail_status: str,
    seed: int | None,
    latency_ms: float,
    outage_seconds: float,
    exhaust_rate_limit: bool,
    webhook_urls: tuple[str, ...],
    webhook_secret: str | None,
    quiet: bool,
) -> None:
    """Run a local GitHub-compatible REST API (PyGithub: Github(base_url=URL, auth=Auth.Token(TOKEN)))."""
    limits = Limits(
        core=rate_limit,
        window=rate_limit_window,
        writes_per_minute=writes_per_minute,
        writes_per_hour=writes_per_hour,
        max_concurrency=max_concurrency,
        secondary_status=int(secondary_status),
    )
    faults: dict[str, Any] = {
        "fail_rate": fail_rate,
        "fail_status": int(fail_status),
        "latency_ms": latency_ms,
        "outage_seconds": outage_seconds,
        "exhaust_rate_limit": exhaust_rate_limit,
    }
    try:
        hub = Hub(
            db=db,
            repos=list(repos) or None,
            tokens=[t for t in tokens if t],
            tokens_file=tokens_file,
            host=host,
            port=port,
            limits=limits,
            faults=faults,
            seed=seed,
        )
        repo_names = [row["full_name"] for row in hub.store.repos()]
        for app_id, key_path, installation_id in apps:
            try:
                pem = Path(key_path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"--app {app_id}: cannot read {key_path}: {exc.strerror}") from None
            slug = "sentinel" if len(apps) == 1 else f"sentinel-{app_id}"
            hub.add_app(app_id, pem, {installation_id: repo_names}, slug=slug)
        for url in webhook_urls:
            hub.add_webhook(url, webhook_secret)
        hub.bind()
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc

    click.echo(f"sentinel hub: {hub.base_url}  (also under {hub.api_v3_url})")
    if hub.generated_token:
        click.echo(f"token: {hub.generated_token}")
    if not quiet:
        for row in hub.store.repos():
            click.echo(f"repo: {row['full_name']}  issues: {hub.base_url}/{row['full_name']}/issues")
        for app in hub.apps.apps():
            for installation in app.installations:
                click.echo(f"app: {app.app_id} ({app.bot_login})  installation {installation.id}")
        for hook in hub.webhooks.hooks():
            scope = ", ".join(hook.repos) if hook.repos is not None else "every repo"
            click.echo(f"webhook: {hook.url}  ({scope}; {'signed' if hook.secret else 'unsigned'})")
        active = {key: value for key, value in faults.items() if key != "fail_status" and value}
        if active:
            click.echo(f"faults: {json.dumps(active)}")
        click.echo("admin API: /_hub/requests, /_hub/faults (admin token); Ctrl-C stops")
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        hub.serve_forever()
    except KeyboardInterrupt:
        pass
