"""What the GitHub benchmarks share: a cluster's environment pointed at an in-process hub, and its clean-up."""
from __future__ import annotations

import json
import os
from pathlib import Path

import redis

from sentinel_celery.config import Config, load_config, set_config
from sentinel_celery.hub import Hub


def hub_cluster_env(tmp: str, redis_url: str, namespace: str, hub: Hub, shared: dict) -> tuple[dict, Config]:
    """Write ``shared`` as the cluster's shared.json under ``tmp``; the environment of this process and of the
    workers it starts (Redis, namespace, the hub as GitHub), and the configuration loaded from it."""
    config_dir = Path(tmp) / "config"
    config_dir.mkdir()
    (config_dir / "shared.json").write_text(json.dumps(shared))
    env = {"REDIS_URL": redis_url, "SENTINEL_NAMESPACE": namespace, "SENTINEL_BROKER_PREFIX": namespace,
           "SENTINEL_CONFIG_DIR": str(config_dir), "GITHUB_OWNER": hub.owner,
           "GITHUB_REPO": hub.repo.split("/")[1], "GITHUB_TOKEN": hub.token, "GITHUB_API_URL": hub.base_url}
    os.environ.update(env)
    os.environ.pop("WORKER_ID", None)
    cfg = load_config()
    set_config(cfg)
    return env, cfg


def forget_namespace(client: redis.Redis, namespace: str) -> None:
    keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i:i + 500])
