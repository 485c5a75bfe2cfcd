-- One rate-limit budget, decided on the server so that every replica admits against it
-- atomically: see redis.rs. Loaded once, called by its SHA (EVALSHA).
--
-- KEYS[1]  the budget's hash (origin + connection, hashed).
-- ARGV[1]  "a" to admit one request, "o" to record what an answer said.
-- admit:   ARGV[2] the request's deadline in ms from now (-1: none), ARGV[3] smoothing (0/1).
-- observe: ARGV[2] limit, ARGV[3] remaining (-1: absent), ARGV[4] reset: 0 absent, 1 in,
--          2 ago; ARGV[5] its ms; ARGV[6] its precision in ms; ARGV[7] Retry-After in ms
--          (-1: absent); ARGV[8] 1 for a 429.
--
-- Times are milliseconds of this server's clock (TIME): replicas send and receive durations
-- from now, so their clocks need not agree. Admitting spends one unit of the window at once;
-- answers only ever lower what is left.
--
-- Fields: lim limit; rem left to admit (absent: nothing known); rst reset (absent with rem:
-- refilled, the window turned and no answer spoke of the new one yet); prv the reset that
-- passed last; prc the window's precision; blk nothing goes before (a 429); nxt smoothing's
-- next turn; wl the longest window seen; pk the most left seen in the window; lag how much
-- later than its resets the server turns windows; stl a 429 came after the reset; unk
-- admissions while nothing was known, uat the last of them; psd since when the budget is
-- spent.
--
-- Reply to "a": {decision, wait ms, left after (-1: nothing known), reset in ms (-1: none),
-- limit (-1: none), 1 if this request is the first to find the budget spent, ms the budget
-- was spent when this request is the first to go again (-1: not)}; decisions: 0 go, 1 go
-- after the wait (a kept turn), 2 held: spent, 3 held: answers will tell, 4 refused.

local MAX_LAG = 5000
local STALE_STEP = 100
local ANSWERS_STEP = 50
local IN_FLIGHT = 10000
local MAX_TTL = 7200000

local key = KEYS[1]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local names = {'lim', 'rem', 'rst', 'prv', 'prc', 'blk', 'nxt', 'wl', 'pk', 'lag', 'stl', 'unk', 'uat', 'psd'}
local raw = redis.pcall('HMGET', key, unpack(names))
if type(raw) ~= 'table' or raw['err'] then
  -- A key that is not a budget (written by something else) is replaced, not an error.
  redis.call('DEL', key)
  raw = {}
end
local s, was = {}, {}
for i, name in ipairs(names) do
  s[name] = tonumber(raw[i])
  was[name] = s[name]
end

-- An argument: a number, or nil when absent (negative) or garbage.
local function arg(i)
  local n = tonumber(ARGV[i])
  if n == nil or n < 0 then
    return nil
  end
  return math.floor(n)
end

local function later_of(a, b)
  if a == nil then return b end
  if b == nil then return a end
  return math.max(a, b)
end

-- A window whose reset has come is refilled with the limit (nothing known without one).
if s.rst and s.rst <= now then
  s.prv = s.rst
  s.rst = nil
  s.nxt = nil
  s.stl = nil
  s.rem = s.lim
end

local function open(reset, left, precision)
  s.rst = reset
  s.rem = left
  s.pk = left
  s.prc = precision
  s.wl = math.max(s.wl or 0, reset - now)
  s.nxt = nil
  s.stl = nil
  s.unk = nil
  s.uat = nil
end

-- A 429 saying the budget is spent from a window whose reset has passed: the server has not
-- turned yet. Hold everything a moment, then probe one request at a time.
local function stale()
  s.stl = 1
  s.blk = later_of(s.blk, now + STALE_STEP)
end

local function observe()
  local limit, left = arg(2), arg(3)
  local kind, ms, precision = arg(4), arg(5), arg(6) or 0
  local retry_after, limited = arg(7), arg(8) == 1
  if limit then s.lim = limit end
  local lag = s.lag or 0
  local reset, past = nil, false
  if kind == 1 and ms then
    reset = now + ms + lag
  elseif kind == 2 and ms then
    reset = now - ms + lag
  end
  if reset and reset <= now then past = true end
  local spent = limited and left == 0
  local refilled = s.rst == nil and s.rem ~= nil
  if reset and not past and left then
    if s.rem == nil then
      -- The first answer: requests admitted meanwhile are on their way, not counted yet.
      if s.unk and s.uat and now - s.uat < IN_FLIGHT then
        left = math.max(0, left - math.max(0, s.unk - 1))
      end
      open(reset, left, precision)
    elseif refilled then
      local after = s.prv or now
      if reset > after + math.max(precision, s.prc or 0) then
        if s.stl then
          -- The first answer of the new window, after 429s that said the old one was still
          -- on: the server's windows turn this much after the reset it writes.
          local new_lag = math.min(lag + (now - after), MAX_LAG)
          reset = reset - lag + new_lag
          s.lag = new_lag
        end
        -- What was admitted since the turn counts against the new window.
        open(reset, math.min(left, s.rem), precision)
      elseif spent then
        stale()
      end
      -- Else: a late answer from the window that is over.
    else
      local tolerance = math.max(precision, s.prc or 0)
      if reset > s.rst + tolerance then
        open(reset, left, precision)
      elseif reset + tolerance >= s.rst then
        -- The same window: what is left only goes down, the later reset is the safer one.
        s.rst = math.max(s.rst, reset)
        s.rem = math.min(s.rem, left)
        s.pk = math.max(s.pk or 0, left)
        s.prc = tolerance
      end
    end
  elseif past and spent and refilled then
    stale()
  elseif reset == nil and left and s.rst then
    s.rem = math.min(s.rem, left)
  end
  if limited then
    local until_ms = nil
    if retry_after then
      until_ms = now + retry_after
    elseif left and left > 0 then
      -- A 429 with budget left is another limit (a cap on pending jobs): no reset clears it.
      until_ms = nil
    elseif reset and not past then
      until_ms = reset
    end
    if until_ms and until_ms > now then
      s.blk = later_of(s.blk, until_ms)
    end
  end
end

local function go(wait)
  local resumed = -1
  if s.psd then
    resumed = now - s.psd
    s.psd = nil
  end
  if wait > 0 then
    return {1, wait, resumed}
  end
  return {0, 0, resumed}
end

local function spent_until(until_ms, deadline)
  local wait = until_ms - now
  if deadline and deadline < wait then
    return {4, wait, -1}
  end
  local first = 0
  if s.psd == nil then
    s.psd = now
    first = 1
  end
  return {2, wait, -1, first}
end

-- Whether what is left is less than half the share of the limit the time left deserves.
local function small(available, left_ms)
  local cap = s.lim or s.pk or 0
  local window = math.max(s.wl or 0, 1)
  return available * window * 2 < cap * left_ms
end

local function admit()
  local deadline, smoothing = arg(2), arg(3) == 1
  if s.blk then
    if s.blk > now then
      return spent_until(s.blk, deadline)
    end
    s.blk = nil
  end
  if s.rem == nil then
    -- Nothing known: never held, but counted for when the first answer comes.
    s.unk = (s.unk or 0) + 1
    s.uat = now
    return go(0)
  end
  if s.rst == nil then
    -- Refilled: no answer has spoken of the new window yet.
    if s.rem > 0 then
      s.rem = s.rem - 1
      if s.stl then
        s.blk = now + STALE_STEP
      end
      return go(0)
    end
    if deadline and deadline <= 0 then
      return {4, 0, -1}
    end
    return {3, math.min(ANSWERS_STEP, deadline or ANSWERS_STEP), -1}
  end
  if s.rem <= 0 then
    return spent_until(s.rst, deadline)
  end
  local left_ms = s.rst - now
  local wait = 0
  if smoothing and small(s.rem, left_ms) then
    -- Space what is left evenly until the reset; a request whose deadline cannot wait for
    -- its turn goes now, and the next turn moves on.
    local from = now
    if s.nxt and s.nxt > now then
      from = s.nxt
      if deadline == nil or s.nxt - now <= deadline then
        wait = s.nxt - now
      end
    end
    s.nxt = from + math.max(0, math.floor((s.rst - from) / s.rem))
  else
    s.nxt = nil
  end
  s.rem = s.rem - 1
  return go(wait)
end

local reply = 1
if ARGV[1] == 'a' then
  reply = admit()
elseif ARGV[1] == 'o' then
  observe()
else
  return redis.error_reply('blueprint budget: unknown operation')
end

-- Write back what changed, and let the key expire a window after whatever it still waits
-- for.
local set, unset, kept = {}, {}, 0
for _, name in ipairs(names) do
  local v = s[name]
  if v ~= nil then
    kept = kept + 1
  end
  if v ~= was[name] then
    if v == nil then
      unset[#unset + 1] = name
    else
      set[#set + 1] = name
      set[#set + 1] = string.format('%d', v)
    end
  end
end
if kept == 0 then
  redis.call('DEL', key)
else
  if #unset > 0 then
    redis.call('HDEL', key, unpack(unset))
  end
  if #set > 0 then
    redis.call('HSET', key, unpack(set))
  end
  local horizon = now
  if s.rst and s.rst > horizon then horizon = s.rst end
  if s.blk and s.blk > horizon then horizon = s.blk end
  if s.nxt and s.nxt > horizon then horizon = s.nxt end
  local ttl = horizon - now + math.max(s.wl or 0, 1000)
  if s.unk then ttl = math.max(ttl, IN_FLIGHT) end
  redis.call('PEXPIRE', key, math.min(ttl, MAX_TTL))
end

if type(reply) == 'table' then
  local function known(v)
    if v == nil then return -1 end
    return v
  end
  local reset_in = -1
  if s.rst then reset_in = s.rst - now end
  local left = -1
  if s.rem then left = s.rem end
  return {reply[1], reply[2], left, reset_in, known(s.lim), reply[4] or 0, reply[3]}
end
return reply
