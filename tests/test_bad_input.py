"""Bad input that used to break a guarantee or end in a traceback: exceptions that come back from
the result backend intact, refused timings and capacities, malformed URLs and ports."""
import json

import pytest

from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.state.leases import LeaseLost, LockContended, try_acquire


def test_lock_contended_comes_back_from_the_result_backend_intact(workers, celery_client):
    workers.start("wx", queues=["test"], concurrency=1)
    holder = try_acquire("res:shared", 60, worker="someone")
    try:
        with pytest.raises(LockContended) as err:
            celery_client.send_task("tests.contend_fail", args=["shared"]).get(timeout=30)
    finally:
        holder.release()
    exc = err.value
    assert exc.name == "res:shared" and exc.token == holder.token and exc.holder == holder.owner
    assert str(exc).startswith(f"lease 'res:shared' is held by another owner (held by {holder.owner}, "
                               f"token {holder.token}, expires in ")
    assert str(type(exc)(*exc.args)) == str(exc)


def test_lease_lost_comes_back_from_the_result_backend_intact(workers, celery_client, rclient, namespace):
    workers.start("wy", queues=["test"], concurrency=1)
    r = celery_client.send_task("tests.leased", args=["stolen"], kwargs={"sleep": 4})

    def started():
        return [json.loads(x) for x in rclient.lrange(f"{namespace}test:leased", 0, -1)]
    token = wait_for(started, 30, message="the leased task to start")[0]["token"]
    rclient.delete(f"{namespace}lease:res:stolen")  # its TTL ran out, say, and another owner took it
    thief = try_acquire("res:stolen", 60, worker="thief")
    try:
        with pytest.raises(LeaseLost) as err:
            r.get(timeout=30)
    finally:
        thief.release()
    assert err.value.name == "res:stolen" and err.value.token == token
    assert str(err.value) == (f"lease 'res:stolen' (token {token}) was lost: it expired or another owner "
                              f"holds it now")
