"""Account-wide create pacing, shared by every worker process through Redis.

Replicate limits creates per account (600 a minute, with bursts). Every process takes a token
from one bucket before it creates; avatars that find none wait their turn in one first-come
queue (ordered by when they were submitted) and learn how long to wait, so steps reschedule
with a countdown instead of sleeping. A 429 pauses every process for the wait the provider
gave and halves the rate; each create that goes through wins back 2% of it, so a lower real
limit is found within a few answers and the configured one is regained within a few seconds
(a step proportional to the rate: a fixed step small enough for a slow account took hundreds of
creates to recover from one stray 429 on a fast one).

Time comes from Python (`time.time`, so freezegun can drive it) and all state changes happen in
Lua scripts: one round trip each, atomic across processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings

from avatars.shared_state import shared_redis

BUCKET_KEY = "avatars:pacing:bucket"
QUEUE_KEY = "avatars:pacing:queue"
SEEN_KEY = "avatars:pacing:seen"

# A 429 multiplies the rate by DECREASE_FACTOR; each create that goes through multiplies it by
# INCREASE_FACTOR, up to the configured rate. A simulation with 0.3 s of jitter between a token
# and its create reaching the provider: an account of 20 at once and 30 a minute takes 80 creates
# in 1.03 times the ideal time with 7 answers 429; at 600 a minute, 300 creates take 31 s (ideal
# 28 s) after the one 429 the jitter causes, where a fixed step of 0.1% of the rate took 45 s.
DECREASE_FACTOR = 0.5
INCREASE_FACTOR = 1.02
# Never slower than one create a minute, whatever the provider answered.
MIN_RATE_PER_SECOND = 1 / 60
# A waiter whose step has not asked again for this long has gone (ended, or its worker died).
STALE_WAITER_SECONDS = 60.0

_ACQUIRE = """
local now, member, score = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local max_rate, burst, stale = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'rate', 'paused_until')
local rate = math.min(tonumber(b[3]) or max_rate, max_rate)
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
local paused = tonumber(b[4]) or 0
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - stale)) do
  redis.call('ZREM', KEYS[2], gone)
  redis.call('ZREM', KEYS[3], gone)
end
redis.call('ZADD', KEYS[2], 'NX', score, member)
redis.call('ZADD', KEYS[3], now, member)
local rank = redis.call('ZRANK', KEYS[2], member)
if now < paused then
  return {0, tostring(paused - now + rank / rate), rank}
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate)
  ts = now
end
local granted = rank + 1 <= tokens
if granted then
  tokens = tokens - 1
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZREM', KEYS[3], member)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts), 'rate', tostring(rate))
if granted then return {1, '0', 0} end
return {0, tostring((rank + 1 - tokens) / rate), rank}
"""

_THROTTLED = """
local now, wait, max_rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local factor, min_rate = tonumber(ARGV[4]), tonumber(ARGV[5])
local b = redis.call('HMGET', KEYS[1], 'rate', 'paused_until')
local rate = math.min(tonumber(b[1]) or max_rate, max_rate)
local paused = tonumber(b[2]) or 0
-- The 429s of one burst are one signal: lower the rate once per pause.
if now >= paused then rate = math.max(min_rate, rate * factor) end
paused = math.max(paused, now + wait)
redis.call('HSET', KEYS[1], 'rate', tostring(rate), 'paused_until', tostring(paused),
  'tokens', '1', 'ts', tostring(paused))
return tostring(rate)
"""

_CREATED = """
local max_rate, factor = tonumber(ARGV[1]), tonumber(ARGV[2])
local rate = tonumber(redis.call('HGET', KEYS[1], 'rate'))
if rate and rate < max_rate then
  redis.call('HSET', KEYS[1], 'rate', tostring(math.min(max_rate, rate * factor)))
end
return 1
"""


@dataclass(frozen=True)
class Turn:
    """Whether a create may go now; if not, how long to wait and how many are ahead."""

    granted: bool
    wait: float = 0.0
    ahead: int = 0


def configured_rate() -> float:
    """Creates per second REPLICATE_CREATES_PER_MINUTE allows."""
    return settings.REPLICATE_CREATES_PER_MINUTE / 60


def _script(source: str):
    return shared_redis().register_script(source)


def take_turn(member: str, *, submitted_at: float, now: float | None = None) -> Turn:
    """Take a create slot for `member`, or join (or keep) its place in the queue."""
    granted, wait, ahead = _script(_ACQUIRE)(
        keys=[BUCKET_KEY, QUEUE_KEY, SEEN_KEY],
        args=[
            time.time() if now is None else now,
            member,
            submitted_at,
            configured_rate(),
            settings.REPLICATE_CREATES_BURST,
            STALE_WAITER_SECONDS,
        ],
    )
    return Turn(granted=bool(granted), wait=float(wait), ahead=int(ahead))


def record_throttled(retry_after: float | None, *, now: float | None = None) -> float:
    """The provider answered 429: pause every process and slow down. Returns the new rate."""
    rate = _script(_THROTTLED)(
        keys=[BUCKET_KEY],
        args=[
            time.time() if now is None else now,
            max(retry_after or 1.0, 0.0),
            configured_rate(),
            DECREASE_FACTOR,
            MIN_RATE_PER_SECOND,
        ],
    )
    return float(rate)


def record_created() -> None:
    """A create went through: win back a little of the rate."""
    _script(_CREATED)(keys=[BUCKET_KEY], args=[configured_rate(), INCREASE_FACTOR])


def leave_queue(member: str) -> None:
    """An avatar that ended while waiting gives up its place."""
    client = shared_redis()
    client.zrem(QUEUE_KEY, member)
    client.zrem(SEEN_KEY, member)


def place_in_queue(member: str) -> int | None:
    """How many avatars wait ahead of this one, or None when it is not waiting."""
    return shared_redis().zrank(QUEUE_KEY, member)


def waiting_count() -> int:
    return shared_redis().zcard(QUEUE_KEY)


def current_rate() -> float:
    """Creates per second the service allows itself now."""
    rate = shared_redis().hget(BUCKET_KEY, "rate")
    return min(float(rate), configured_rate()) if rate else configured_rate()
