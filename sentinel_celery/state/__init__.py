"""The state layer: Sentinel's Redis-backed state, which knows nothing of Celery workers.

Owns: the Redis connection (connection.py), a private connection for scripts (direct.py), fenced
leases (leases.py), the connections a monitor watches for dead processes (live_connections.py), the worker registry
(registry.py), shared memory (memory.py), the centralized log stream (logs.py), the GitHub outbox
(outbox.py), task statistics (taskstats.py), delivery tags by holder (tags.py) and the failover
records (failovers.py). Each module documents the Redis keys it owns.

May import: config (and version). Everything above may use it.
"""
