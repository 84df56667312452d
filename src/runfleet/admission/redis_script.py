"""The one Lua script that spends an account's limits in Redis, atomically, on Redis' clock.

Why a leaky bucket (GCRA's "meter" form: a level and the time it was last drained) and not a
sliding window. The simulator and OpenAI enforce sub-minute windows: ``tight`` takes 10
requests in any second of a 600 RPM quota. A sliding-window log (what ``limits``' moving window
keeps in Redis: a list of every hit's timestamp) lets a whole minute's quota go at once and is
refused by such a server; it also costs one list entry per request (3,000 for 3,000 RPM) read
on every check. The bucket is two numbers per limit, one O(1) step per call, and the bound of
:mod:`runfleet.admission.bucket` holds for it unchanged: capacity *b* draining at
``(rpm - b) / (60 + J)`` admits at most rpm in any 60 s and ``b + r`` in any second, whatever
the number of processes, because they all fill the one level. It is kept as (level, time)
rather than GCRA's single "theoretical arrival time" because the rate changes under it (back-
off, a lower limit learned): a level drains correctly at whatever rate is in force.

One script, one round trip, does everything a process has to say or ask:

* its heartbeat (``members``: who is alive, and each one's configured rpm/tpm, so the smallest
  wins and a fallback knows N);
* what it learned and must share: tokens given back after reconciliation, a 429's pause
  (requests or tokens), the server's limits from headers;
* its reservation: ``requests`` (0 or 1) and ``tokens`` (0 or an estimate) checked and taken
  together, all or nothing; the waits come back when they do not fit.

Times are Redis' ``TIME`` (seconds, as a float) so hosts' clocks never meet; tests pass
``now`` in ``ARGV[1]`` to drive it deterministically against the real server. Every key
carries the account in a hash tag, ``runfleet:{account}:...``, so Redis Cluster keeps them in
one slot, as a script touching several keys needs. Keys expire an hour after the last call.
"""

from __future__ import annotations

__all__ = ["SCRIPT", "keys_for"]


def keys_for(account: str) -> list[str]:
    """Return the script's KEYS for ``account``: the limits hash, the members and their limits."""
    tag = "{" + account + "}"
    return [f"runfleet:{tag}:limits", f"runfleet:{tag}:members", f"runfleet:{tag}:configured"]


# ARGV: 1 now ("" = Redis TIME) | 2 member ("" = no heartbeat) | 3 member ttl s
#       4 configured rpm | 5 configured tpm ("" = none) | 6 requests wanted (0/1)
#       7 rpm in force here | 8 capacity at that rpm | 9 delay allowance s
#       10 tokens wanted | 11 token limit in force here ("" = none)
#       12 tokens given back | 13 pause requests s | 14 pause tokens s
#       15 server rpm learned ("" = none) | 16 server tpm learned ("" = none)
#       17 requests carried in (a fallback's level) | 18 tokens carried in
#       19 this member's round-trip allowance s (sent with its heartbeat)
# Returns {request wait, token wait, rpm in force, smallest rpm, largest rpm, members, now,
# round-trip allowance in force} as strings (Lua numbers would be truncated to integers).
SCRIPT = """
local limits, members, configured = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1e6
end
local SLIVER = 1e-9

local function num(field, default)
  local v = redis.call('HGET', limits, field)
  if v then return tonumber(v) end
  return default
end
local function put(field, value)
  redis.call('HSET', limits, field, string.format('%.17g', value))
end

-- Who is alive, and the smallest limits they configured.
local member = ARGV[2]
if member ~= '' then
  redis.call('ZADD', members, now, member)
  redis.call('HSET', configured, member .. ':rpm', ARGV[4])
  if ARGV[5] ~= '' then redis.call('HSET', configured, member .. ':tpm', ARGV[5]) end
  redis.call('HSET', configured, member .. ':lag', ARGV[19])
end
local gone = redis.call('ZRANGEBYSCORE', members, '-inf', now - tonumber(ARGV[3]))
for _, m in ipairs(gone) do
  redis.call('HDEL', configured, m .. ':rpm', m .. ':tpm', m .. ':lag')
end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', members, '-inf', now - tonumber(ARGV[3])) end
local alive = redis.call('ZCARD', members)
local min_rpm, max_rpm, min_tpm, lag = nil, nil, nil, 0
local conf = redis.call('HGETALL', configured)
for i = 1, #conf, 2 do
  local v, what = tonumber(conf[i + 1]), string.sub(conf[i], -4)
  if what == ':rpm' then
    if not min_rpm or v < min_rpm then min_rpm = v end
    if not max_rpm or v > max_rpm then max_rpm = v end
  elseif what == ':lag' then lag = math.max(lag, v)
  elseif not min_tpm or v < min_tpm then min_tpm = v end
end

-- What the caller learned: limits from headers, a 429's pause, tokens given back.
if ARGV[15] ~= '' then put('server_rpm', tonumber(ARGV[15])) end
if ARGV[16] ~= '' then put('server_tpm', tonumber(ARGV[16])) end
local pause_r = tonumber(ARGV[13])
if pause_r > 0 and now + pause_r > num('pause_r', 0) then put('pause_r', now + pause_r) end
local pause_t = tonumber(ARGV[14])
if pause_t > 0 and now + pause_t > num('pause_t', 0) then put('pause_t', now + pause_t) end

local function drained(prefix, rate, at)
  local level, as_of = num(prefix .. '_level', 0), num(prefix .. '_at', at)
  if at > as_of then level = math.max(0, level - (at - as_of) * rate) else at = as_of end
  return level, at
end

-- Requests: the bucket of runfleet.admission.bucket, at the smallest rpm anyone knows.
local rpm_here = tonumber(ARGV[7])
local rpm = math.max(2, math.min(rpm_here, min_rpm or rpm_here, num('server_rpm', rpm_here)))
-- The round trip is a delay the local bucket never had: a request is counted here, at Redis'
-- TIME, and leaves its process after the reply (and a loaded loop's stall) reached it. The
-- slowest live member's allowance (its recent round trips' 99th percentile) widens the
-- delay allowance of bucket.py for everyone: the capacity gives up what drains meanwhile,
-- and once it is down to one request the drain slows, so that what a window of the server
-- sees stays within the burst the caller's capacity stood for.
local held = tonumber(ARGV[8]) * rpm / rpm_here
local cap = math.max(1, held - lag * rpm / 60)
local r_rate = (rpm - cap) / (60 + tonumber(ARGV[9]) + lag)
if lag > 0 and held > cap then r_rate = math.min(r_rate, (held - cap) / lag) end
local r_level, r_at = drained('r', r_rate, now)
r_level = r_level + tonumber(ARGV[17])
local paused = num('pause_r', 0)
if paused <= now and paused > num('filled_r', 0) then
  -- A pause has lifted: count the bucket full at its end, so everyone resumes at the rate.
  r_level = math.max(r_level, cap)
  put('filled_r', paused)
end
local r_wait = 0
if tonumber(ARGV[6]) > 0 then
  if paused > now then r_wait = paused - now
  else
    local w = (r_level + 1 - cap) / r_rate
    if w > SLIVER then r_wait = w end
  end
end

-- Tokens: a bucket of one second's share draining the rest of the minute (60 s bound); one
-- request larger than it waits for an empty bucket and leaves it in debt, as OpenAI's does.
local t_wait = 0
local t_limit = tonumber(ARGV[11])
local t_level, t_at = 0, now
local t_rate = 0
if t_limit then
  t_limit = math.min(t_limit, min_tpm or t_limit, num('server_tpm', t_limit))
  local t_cap = t_limit / 60
  t_rate = (t_limit - t_cap) / 60
  t_level, t_at = drained('t', t_rate, now)
  t_level = math.max(0, t_level - tonumber(ARGV[12])) + tonumber(ARGV[18])
  local want = tonumber(ARGV[10])
  if want > 0 then
    local paused_t = num('pause_t', 0)
    if paused_t > now then t_wait = paused_t - now
    else
      local w = (t_level - math.max(0, t_cap - want)) / t_rate
      if w > SLIVER then t_wait = w end
    end
  end
end

-- All or nothing: both fit, or neither is taken.
if r_wait == 0 and t_wait == 0 then
  if tonumber(ARGV[6]) > 0 then r_level = r_level + 1 end
  if t_limit then t_level = t_level + tonumber(ARGV[10]) end
end
put('r_level', r_level)
put('r_at', r_at)
if t_limit then
  put('t_level', t_level)
  put('t_at', t_at)
end
for _, k in ipairs(KEYS) do redis.call('EXPIRE', k, 3600) end
return {tostring(r_wait), tostring(t_wait), tostring(rpm), tostring(min_rpm or rpm_here),
        tostring(max_rpm or rpm_here), tostring(alive), tostring(now), tostring(lag)}
"""
