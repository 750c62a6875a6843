"""The broker layer: how the Celery broker keeps messages, as Sentinel reads and moves them.

The layers above use only the :class:`~sentinel_celery.broker.base.Broker` interface (base.py), got
from :func:`~sentinel_celery.broker.factory.broker_for` (factory.py, by the app's ``broker_url``).
Behind it, for Redis (redis_broker.py): the broker's queues (depths, the next message's age, moving
a waiting message; redis_queues.py), its unacknowledged messages (look up, restore under a new tag,
remove; redis_unacked.py), and the tracking transport that records each message's holder in the
broker's own transaction (redis_transport.py).

May import: state/, routing, config.
"""
