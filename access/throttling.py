"""DRF's rate throttles with their history in a Redis sorted set (full stack).

DRF's throttles read the request history (a list of times) from the cache and write it
back: two round trips, and concurrent requests of one client each write their own list,
so some go uncounted. Here one script drops the times older than the window, counts
what is left, and records the request only when it is allowed: atomic, one round trip,
the same sliding window, rates and keys (`throttle_user_<id>`, `throttle_anon_<ip>`).
Without Redis (the embedded mode: one process) DRF's own throttles run unchanged.
"""

import uuid
from functools import cache

from django_redis import get_redis_connection
from redis.commands.core import Script
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

# KEYS[1]: the client's history. ARGV: now, the window in seconds, the number of requests
# allowed in it, a member for this request. Returns {1} when allowed (and recorded),
# else {0, time of the oldest request in the window} ({0} when none is allowed at all).
_SLIDING_WINDOW = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return {0, redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(window))
return {1}
"""


@cache
def _sliding_window() -> Script:
    return get_redis_connection("default").register_script(_SLIDING_WINDOW)


class _RedisSlidingWindow:
    """For a SimpleRateThrottle subclass: allow_request() and wait() on Redis."""

    _oldest: float | None = None

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        answer = _sliding_window()(
            keys=[f"orchestra:{self.key}"],
            args=[repr(self.now), self.duration, self.num_requests, uuid.uuid4().hex],
            # The cache's connections, with its 2 s timeouts: a Redis that stops
            # answering fails the request soon, as DRF's throttles through the cache did.
            client=get_redis_connection("default"),
        )
        if answer[0] == 1:
            return True
        self._oldest = float(answer[1]) if len(answer) > 1 else None
        return False

    def wait(self) -> float | None:
        """Seconds until the oldest request in the window leaves it."""
        if self._oldest is None:
            return self.duration
        return max(0.0, self.duration - (self.now - self._oldest))


class RedisAnonRateThrottle(_RedisSlidingWindow, AnonRateThrottle):
    pass


class RedisUserRateThrottle(_RedisSlidingWindow, UserRateThrottle):
    pass
