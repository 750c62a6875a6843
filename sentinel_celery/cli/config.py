"""``sentinel config check``: the merged configuration (token redacted), or every error."""
from __future__ import annotations

import json
import sys

import click

from sentinel_celery.cli.common import fail, json_option, redact_url
from sentinel_celery.config import ConfigError, load_config


@click.group("config", help="Configuration.")
def config() -> None:
    pass


@config.command("check", help="Validate and print the merged configuration (token redacted).")
@click.option("--config-dir", type=click.Path(), default=None, help="Default: $SENTINEL_CONFIG_DIR or ./config")
@json_option
def config_check(config_dir, as_json):
    try:
        cfg = load_config(config_dir)
    except ConfigError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "errors": exc.errors}, indent=2))
            sys.exit(1)
        fail("configuration is invalid:" + (" " if len(exc.errors) == 1 else "\n  ") + "\n  ".join(exc.errors),
             code=1)
    data = cfg.as_dict(redact=True)
    data["shared"]["redis"]["url"] = redact_url(data["shared"]["redis"]["url"])
    if as_json:
        click.echo(json.dumps({"ok": True, **data}, indent=2, sort_keys=True))
    else:
        click.echo("configuration OK (sources: " + " < ".join(data["sources"]) + ")")
        click.echo(json.dumps({"shared": data["shared"], "worker": data["worker"]}, indent=2))
