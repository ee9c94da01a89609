-- Compare-and-set of one feature's rollout percent, with its history and audit entry.
-- Nothing is written unless the percent and the paused flag are still what the caller read;
-- in dry run only a recommendation entry is appended. Redis runs a script atomically.
--
-- KEYS: 1 rollout_percent, 2 paused, 3 last_percent, 4 last_change_time,
--       5 last_rollback_time, 6 the audit stream
-- ARGV: 1 expected percent ('' = key absent), 2 expected paused ('true'|'false'),
--       3 new percent, 4 old percent as audited, 5 time, 6 dry run ('true'|'false'),
--       7 feature, 8 reason, 9 by, 10 action
-- Returns {status, current percent ('' = absent), current paused, audit entry id}
-- where status is applied | conflict | recommended.

local stream_type = redis.call('TYPE', KEYS[6])['ok']
if stream_type ~= 'none' and stream_type ~= 'stream' then
  -- checked before any write: a failing XADD after the SETs would leave half a change
  return redis.error_reply(KEYS[6] .. ' holds a ' .. stream_type .. ', not a stream')
end

local current = redis.call('GET', KEYS[1])
local paused = redis.call('GET', KEYS[2]) or 'false'
local expected, new, now, dry_run = ARGV[1], ARGV[3], ARGV[5], ARGV[6]

local percent_matches
if expected == '' then
  percent_matches = (current == false)
else
  -- numeric, so an operator's "10.0" still matches the 10 the controller read
  percent_matches = current ~= false and tonumber(current) == tonumber(expected)
end

if not percent_matches or paused ~= ARGV[2] then
  return {'conflict', current or '', paused, ''}
end

local entry = {'time', now, 'feature', ARGV[7], 'old_percent', ARGV[4], 'new_percent', new,
               'reason', ARGV[8], 'by', ARGV[9], 'dry_run', dry_run, 'action', ARGV[10]}
if dry_run == 'true' then
  return {'recommended', current or '', paused, redis.call('XADD', KEYS[6], '*', unpack(entry))}
end

redis.call('SET', KEYS[1], new)
redis.call('SET', KEYS[3], ARGV[4])
redis.call('SET', KEYS[4], now)
if tonumber(new) < tonumber(ARGV[4]) then
  redis.call('SET', KEYS[5], now)
end
return {'applied', new, paused, redis.call('XADD', KEYS[6], '*', unpack(entry))}
