"""Per-customer request rate limit: in memory on one node, in Redis across nodes.

Uses the ``limits`` library's sliding-window counter, which is atomic in Redis.
If Redis cannot be reached the request is let through (and logged): an outage of
the rate-limit store must not take the provisioning API down with it.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

log = logging.getLogger(__name__)


class RateLimiter:
    def __init__(self, per_second: int, redis_url: str | None = None) -> None:
        self.enabled = per_second > 0
        self.item = RateLimitItemPerSecond(max(per_second, 1))
        self.storage: Storage
        if redis_url:
            uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
            self.storage = RedisStorage(uri, implementation="redispy", key_prefix="mailmoat")
        else:
            self.storage = MemoryStorage()
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)

    async def retry_after(self, customer_id: str) -> int | None:
        """None if the request may go ahead, else seconds to wait before retrying."""
        if not self.enabled:
            return None
        try:
            if await self.limiter.hit(self.item, "api", customer_id):
                return None
            stats = await self.limiter.get_window_stats(self.item, "api", customer_id)
        except Exception as exc:  # the store is down: fail open
            log.warning("rate-limit store unavailable, request allowed: %s", exc)
            return None
        return max(1, math.ceil(stats.reset_time - time.time()))
