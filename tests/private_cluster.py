"""Move a test module's cluster onto the private redis-server of tests/faults_support.py: import both fixtures,
which override conftest's ``rclient`` and ``sentinel_env`` in that module only::

    from tests.private_cluster import on_private_redis, private_redis_client  # noqa: F401

(Not a pytest plugin: registered for every module they would replace conftest's fixtures everywhere.)
"""
from __future__ import annotations

import pytest


@pytest.fixture(name="rclient")
def private_redis_client(private_rclient):
    """conftest's ``rclient``, on the private Redis (import it into a test module to move its cluster there)."""
    return private_rclient


@pytest.fixture(name="sentinel_env")
def on_private_redis(private_sentinel_env):
    """conftest's ``sentinel_env``, on the private Redis (import it with ``private_redis_client``)."""
    return private_sentinel_env
