-- Compare-and-set of one feature's rollout percent, with its history and audit entry.
-- Nothing is written unless every flag key the caller read still holds what it read; in dry
-- run only a recommendation entry is appended, and not again while it is unchanged. Redis
-- runs a script atomically.
--
-- KEYS: 1 rollout_percent, 2 enabled, 3 internal_only, 4 paused, 5 last_change_time,
--       6 last_percent, 7 last_rollback_time, 8 the audit stream, 9 the last-write hash,
--       10 the last-recommendation hash, 11 the features registry, 12 the abort episodes hash
-- ARGV: 1..7 what the caller read of KEYS[1..7]: '*' not compared, '-' absent,
--       '=<raw>' exactly this string, '#<number>' numerically equal (an older caller's
--       percent), '?<value>' this value or absent read as 'false' (an older caller's paused);
--       8 new percent, 9 old percent as audited (the raw string read), 10 time,
--       11 dry run ('true'|'false'), 12 feature, 13 reason, 14 by, 15 action, 16 write id,
--       17 audit retention (entries, trimmed approximately), 18 the changes channel,
--       19 the alert episode of a fast abort ('' for none): already in KEYS[12] is a conflict
--       naming KEYS[12]; recorded there with a live write; 20 see below; 21 the decision's
--       inputs as compact JSON (optional; '' or absent: no `inputs` field in the entry)
-- A segment's change names the unit `feature[segment]` in ARGV[12]: its entry gets a
-- `segment` field, the hashes are keyed by the unit, the registry and the channel get the
-- feature; KEYS[13] is then the feature's paused key and ARGV[20] what the caller read of it.
-- Returns {status, current percent ('' = absent), current paused, audit entry id, key}
-- where status is applied | conflict | recommended | not_initialised, and key names the
-- first key that differed on a conflict.

local too_late = expired(ARGV[16])
if too_late then return too_late end

local wanted = {{KEYS[8], 'stream'}, {KEYS[9], 'hash'}, {KEYS[10], 'hash'}, {KEYS[11], 'set'},
                {KEYS[12], 'hash'}}
for i = 1, 7 do
  wanted[#wanted + 1] = {KEYS[i], 'string'}
end
local refused = wrong_type(wanted)
if refused then return refused end

local current = redis.call('GET', KEYS[1])
local paused = redis.call('GET', KEYS[4]) or 'false'
if not current then
  return {'not_initialised', '', paused, '', KEYS[1]}
end

local function matches(value, expected)
  local mode, text = string.sub(expected, 1, 1), string.sub(expected, 2)
  if mode == '*' then return true end
  if mode == '-' then return value == false end
  if mode == '=' then return value == text end
  if mode == '#' then return value ~= false and tonumber(value) == tonumber(text) end
  if mode == '?' then return (value or 'false') == text end
  return false
end

for i = 1, 7 do
  if not matches(redis.call('GET', KEYS[i]), ARGV[i]) then
    return {'conflict', current, paused, '', KEYS[i]}
  end
end
if KEYS[13] and not matches(redis.call('GET', KEYS[13]), ARGV[20]) then
  return {'conflict', current, paused, '', KEYS[13]}
end

local episode = ARGV[19] or ''
if episode ~= '' and redis.call('HEXISTS', KEYS[12], episode) == 1 then
  return {'conflict', current, paused, '', KEYS[12]}
end

local new, old, now, dry_run, unit = ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local feature, segment = string.match(unit, '^(.-)%[(.+)%]$')
feature = feature or unit
local entry = {'time', now, 'feature', feature, 'old_percent', old, 'new_percent', new,
               'reason', ARGV[13], 'by', ARGV[14], 'dry_run', dry_run, 'action', ARGV[15],
               'write_id', ARGV[16]}
if segment then
  entry[#entry + 1] = 'segment'
  entry[#entry + 1] = segment
end
if ARGV[21] and ARGV[21] ~= '' then
  entry[#entry + 1] = 'inputs'
  entry[#entry + 1] = ARGV[21]
end

local function append(is_write)
  local id = redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[17], '*', unpack(entry))
  if is_write then
    -- rollout:last_write names the unit's last real write: a recommendation is not one (the
    -- lost-write hold compares against it; a read-back finds a recommendation in the stream)
    redis.call('HSET', KEYS[9], unit, ARGV[16] .. ' ' .. id)
  end
  return id
end

if dry_run == 'true' then
  local recommendation = ARGV[15] .. ' ' .. old .. ' ' .. new
  if redis.call('HGET', KEYS[10], unit) == recommendation then
    return {'recommended', current, paused, '', ''}  -- unchanged: not appended again
  end
  redis.call('HSET', KEYS[10], unit, recommendation)
  return {'recommended', current, paused, append(false), ''}
end

redis.call('SET', KEYS[1], new)
if is_percent(old) then  -- never copy an operator's typo into the history
  redis.call('SET', KEYS[6], old)
end
redis.call('SET', KEYS[5], now)
local decrease
if is_percent(old) then
  decrease = tonumber(new) < tonumber(old)
else
  decrease = ARGV[15] == 'rollback'
end
if decrease then
  redis.call('SET', KEYS[7], now)
end
redis.call('HDEL', KEYS[10], unit)
redis.call('SADD', KEYS[11], feature)
local id = append(true)
if episode ~= '' then
  redis.call('HSET', KEYS[12], episode, now .. ' ' .. id)
end
redis.call('PUBLISH', ARGV[18], feature)
return {'applied', new, paused, id, ''}
