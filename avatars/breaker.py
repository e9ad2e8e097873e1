"""A circuit breaker for provider incidents, shared by every process through Redis.

Several transient failures in a row (5xx, network), counted across processes, open it. While
it is open no call goes to Replicate except one probe per cool-off; each failed probe grows the
cool-off from `COOL_OFF_INITIAL` to `COOL_OFF_MAX`, and the first probe answered (anything but
a transient failure) closes it. Calls that were already under way when it opened change
nothing: only probes speak for Replicate then. Steps that meet it open reschedule themselves
for when it may let them through (or are woken when it closes), without spending their retry
budget: an incident is nobody's failed call.

As in pacing, time comes from Python and every change is one Lua script.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from django.conf import settings
from django.dispatch import Signal

from avatars.shared_state import shared_redis

KEY = "avatars:breaker"
# Steps held back by the breaker, woken the moment it closes rather than at their next probe time.
WAITING_KEY = "avatars:breaker:waiting"
logger = logging.getLogger(__name__)

COOL_OFF_INITIAL = 5.0
COOL_OFF_GROWTH = 1.5
COOL_OFF_MAX = 60.0

# 1: call; 2: call, as the probe; 0: wait ARGV seconds.
_ADMIT = """
local now = tonumber(ARGV[1])
local b = redis.call('HMGET', KEYS[1], 'open', 'retry_at', 'cool_off')
if b[1] ~= '1' then return {1, '0'} end
local retry_at = tonumber(b[2]) or 0
if now < retry_at then return {0, tostring(retry_at - now)} end
-- This caller probes; the next probe waits a cool-off even if this one never reports back.
redis.call('HSET', KEYS[1], 'retry_at', tostring(now + tonumber(b[3])))
return {2, '0'}
"""

# Returns {1 if this failure opened it, seconds until a call may go or -1 when closed}.
_FAILED = """
local now, threshold = tonumber(ARGV[1]), tonumber(ARGV[2])
local initial, growth, max = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local probe = ARGV[6] == '1'
local b = redis.call('HMGET', KEYS[1], 'open', 'cool_off', 'retry_at')
if b[1] == '1' then
  local retry_at = tonumber(b[3]) or now
  if probe then
    local cool_off = math.min(max, (tonumber(b[2]) or initial) * growth)
    retry_at = now + cool_off
    redis.call('HSET', KEYS[1], 'cool_off', tostring(cool_off), 'retry_at', tostring(retry_at))
  end
  return {0, tostring(math.max(retry_at - now, 0))}
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures < threshold then return {0, '-1'} end
redis.call('HSET', KEYS[1], 'open', '1', 'opened_at', tostring(now),
  'cool_off', tostring(initial), 'retry_at', tostring(now + initial))
return {1, tostring(initial)}
"""

# Returns 'closed' when this answer closed the breaker, else ''.
_ANSWERED = """
local probe = ARGV[1] == '1'
local b = redis.call('HMGET', KEYS[1], 'open', 'failures')
if b[1] == '1' then
  if not probe then return '' end
  redis.call('DEL', KEYS[1])
  return 'closed'
end
if b[2] and b[2] ~= '0' then redis.call('HSET', KEYS[1], 'failures', '0') end
return ''
"""


# Sent (sender=None, open=bool) when the breaker opens or closes, so alerts follow at once.
breaker_changed = Signal()


@dataclass(frozen=True)
class Admission:
    allowed: bool
    probe: bool = False
    wait: float = 0.0


@dataclass(frozen=True)
class BreakerState:
    open: bool
    opened_at: datetime | None = None
    retry_at: datetime | None = None


def _run(source: str, *args) -> object:
    return shared_redis().register_script(source)(keys=[KEY], args=list(args))


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def admit(now: float | None = None) -> Admission:
    """Whether a call to Replicate may go now, and if not, for how long to hold it back."""
    try:
        verdict, wait = _run(_ADMIT, _now(now))
    except redis.RedisError:
        logger.warning("breaker: Redis unreachable, letting the call through", exc_info=True)
        return Admission(allowed=True)
    return Admission(allowed=bool(verdict), probe=verdict == 2, wait=float(wait))


def record_failure(*, probe: bool = False, now: float | None = None) -> float | None:
    """Count a transient failure. When the breaker is open (now, or already), the seconds until
    it may let a call through; None while it stays closed."""
    try:
        opened, wait = _run(
            _FAILED,
            _now(now),
            settings.REPLICATE_BREAKER_THRESHOLD,
            COOL_OFF_INITIAL,
            COOL_OFF_GROWTH,
            COOL_OFF_MAX,
            int(probe),
        )
    except redis.RedisError:
        logger.warning("breaker: Redis unreachable, failure not counted", exc_info=True)
        return None
    if opened:
        logger.error(
            "breaker opened: Replicate is failing; calls held back", extra={"breaker": "open"}
        )
        breaker_changed.send(sender=None, open=True)
    wait = float(wait)
    return wait if wait >= 0 else None


def record_answer(*, probe: bool = False) -> None:
    """Replicate answered (anything but a transient failure): it is up, if this was the probe."""
    try:
        closed = _run(_ANSWERED, int(probe)) == b"closed"
    except redis.RedisError:
        logger.warning("breaker: Redis unreachable, answer not counted", exc_info=True)
        return
    if closed:
        logger.warning("breaker closed: Replicate answers again", extra={"breaker": "closed"})
        breaker_changed.send(sender=None, open=False)


def wait_for_close(member: str) -> None:
    """Be told (by `take_waiters`) when the breaker closes."""
    try:
        shared_redis().sadd(WAITING_KEY, member)
    except redis.RedisError:
        logger.warning("breaker: Redis unreachable, waiter not recorded", exc_info=True)


def take_waiters() -> list[str]:
    """Everyone waiting for the breaker to close, each handed out once."""
    try:
        with shared_redis().pipeline() as pipe:
            members, _ = pipe.smembers(WAITING_KEY).delete(WAITING_KEY).execute()
    except redis.RedisError:
        logger.warning("breaker: Redis unreachable, waiters not woken", exc_info=True)
        return []
    return sorted(member.decode() for member in members)


def _moment(value: bytes | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), tz=UTC) if value else None


def held_back_for(now: float | None = None) -> float:
    """Seconds until the breaker may let a call through (0: now), without taking the probe."""
    state = current_state()
    if not state.open or state.retry_at is None:
        return 0.0
    return max(0.0, state.retry_at.timestamp() - _now(now))


def current_state() -> BreakerState:
    """Whether it is open, since when, and when it may let the next probe through."""
    try:
        opened, opened_at, retry_at = shared_redis().hmget(KEY, "open", "opened_at", "retry_at")
    except redis.RedisError:
        logger.warning("breaker: Redis unreachable, state unknown", exc_info=True)
        return BreakerState(open=False)
    if opened != b"1":
        return BreakerState(open=False)
    return BreakerState(open=True, opened_at=_moment(opened_at), retry_at=_moment(retry_at))
