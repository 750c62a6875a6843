"""Taking a message off its queue and recording who holds it, in one step.

kombu's Redis consumer takes a message with ``BRPOP`` and records it in ``unacked`` in a second round trip. A
worker killed between the two loses the message for good: it is in no queue and in no ``unacked`` entry, so
neither failover nor the visibility timeout can give it back. A kill -9 that follows a task's end by a few
milliseconds lands there, because that is when the worker takes its next waiting message.

:class:`AtomicFetch` (mixed into the tracking channels of broker/redis_transport.py) takes the next message
with one script instead: it pops from the same lists in ``BRPOP``'s order and writes kombu's ``unacked`` and
``unacked_index`` entries and the holder's tag in the same step. Only when every list is empty does the channel
block in ``BRPOP``, as kombu does; a message that arrives during that wait still takes kombu's two steps (its
arrival, not a task's end, times that moment). While messages wait, a message also costs one round trip
instead of two.

The ``unacked`` entry is kombu's own format (``[message, exchange, routing key]``, the message JSON as it was
in the list), so kombu's ack, reject and restore and Sentinel's failover read it unchanged.

Redis keys: the queues' lists (RPOP), kombu's ``unacked`` and ``unacked_index`` (under the broker's key
prefix), and the holder's ``tags:<instance>``.
"""
from __future__ import annotations

import hashlib
import logging
import time
from queue import Empty

import redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

logger = logging.getLogger(__name__)

# KEYS: unacked, unacked_index, the holder's tag set, then the lists in BRPOP's order. ARGV: the delivery time.
# Returns {list index, message, 1 if recorded}, or false when every list is empty. A message without a delivery
# tag (not kombu's) is returned unrecorded: the QoS records it as kombu would.
TAKE = """
for i = 4, #KEYS do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    local ok, m = pcall(cjson.decode, item)
    local props = ok and type(m) == 'table' and m['properties']
    local tag = type(props) == 'table' and props['delivery_tag']
    local info = type(props) == 'table' and props['delivery_info']
    if type(tag) ~= 'string' or type(info) ~= 'table' then return {i - 4, item, 0} end
    redis.call('ZADD', KEYS[2], ARGV[1], tag)
    redis.call('HSET', KEYS[1], tag,
               '[' .. item .. ',' .. cjson.encode(info['exchange'] or '') .. ',' .. cjson.encode(info['routing_key'] or '') .. ']')
    redis.call('SADD', KEYS[3], tag)
    return {i - 4, item, 1}
  end
end
return false
"""
TAKE_SHA = hashlib.sha1(TAKE.encode()).hexdigest()  # noqa: S324  (Redis names scripts by SHA-1)


class AtomicFetch:
    """A kombu Redis channel mixin: take waiting messages with :data:`TAKE`, block in BRPOP only when none wait.

    The channel's QoS says where the holder's tags go (``fetch_tag_key()``; None: kombu's two steps) and skips
    its own ``unacked`` write for the message being delivered (``taken_tag``)."""

    #: the delivery tag of the message being delivered, already recorded by TAKE
    taken_tag: str | None = None
    _take_next = True     # try TAKE first; False after TAKE found every list empty: BRPOP next
    _taking: list | None = None  # the lists of the TAKE in flight (None: a BRPOP, or nothing, is in flight)
    _script_cached = False
    _take_refused = False  # Redis answered the script with an error: BRPOP only

    @property
    def take_in_flight(self) -> bool:
        """A take was sent and its reply not yet handled: a message may be recorded that the worker does not hold yet."""
        return self._taking is not None

    def _brpop_start(self, timeout=None):
        tag_key = self.qos.fetch_tag_key() if self._take_next and not self._take_refused else None
        if tag_key is None:
            self._take_next = True  # after this BRPOP returns or times out
            self._taking = None
            return super()._brpop_start(timeout)
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        lists = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        prefix = self.global_keyprefix or ""
        keys = [prefix + self.unacked_key, prefix + self.unacked_index_key, tag_key, *(prefix + k for k in lists)]
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        self._taking = lists
        script = ("EVALSHA", TAKE_SHA) if self._script_cached else ("EVAL", TAKE)
        self.client.connection.send_command(*script, len(keys), *keys, time.time())

    def _brpop_read(self, **options):
        lists, self._taking = self._taking, None
        if lists is None:
            return super()._brpop_read(**options)
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "EVALSHA", **options)
            except redis.exceptions.NoScriptError:  # Redis restarted (or flushed its scripts) since
                self._script_cached = False
                raise Empty() from None
            except redis.ResponseError as exc:  # e.g. a managed Redis that refuses scripts: kombu's way from now on
                logger.warning("sentinel: taking messages with a script failed (%s); this worker takes them with "
                               "BRPOP from now on", exc)
                self._take_refused = True
                raise Empty() from None
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            self._script_cached = True
            if not reply:
                self._take_next = False
                raise Empty()
            index, item, recorded = reply
            dest = lists[int(index)].rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            message = loads(bytes_to_str(item))
            self.taken_tag = message["properties"]["delivery_tag"] if int(recorded) else None
            try:
                self.connection._deliver(message, dest)
            finally:
                self.taken_tag = None
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()
