-- Audited writes of a feature's flag keys (init, pause, resume, audience) in one atomic step.
-- Mode 'nx' writes each key only where it is absent (init); 'set' overwrites; 'switch' writes
-- every key only when the first one's value changes (an audience switch and its percent
-- reset; an absent value reads as 'false'). 'set' and 'switch' refuse a feature whose
-- rollout_percent is absent (not initialised) and write nothing. When the percent changes,
-- last_percent and last_change_time record it. An audit entry is appended, the write id
-- recorded, the feature registered and its name published only when something was written.
--
-- KEYS: 1 the audit stream, 2 rollout_percent, 3 last_percent, 4 last_change_time,
--       5 the last-write hash, 6 the features registry, 7.. the keys to write
-- ARGV: 1 mode, 2 time, 3 feature, 4 reason, 5 by, 6 action, 7 write id,
--       8 audit retention (entries, trimmed approximately), 9 the changes channel,
--       10.. the values for KEYS[7..]
-- A segment's write names the unit `feature[segment]` in ARGV[3]: its entry gets a `segment`
-- field, the last-write hash is keyed by the unit, the registry and the channel get the feature.
-- Returns {status, audit entry id ('' = nothing written), old percent, new percent,
--          written keys...} where status is ok | not_initialised.

local too_late = expired(ARGV[7])
if too_late then return too_late end

local wanted = {{KEYS[1], 'stream'}, {KEYS[5], 'hash'}, {KEYS[6], 'set'}}
for i = 2, #KEYS do
  if i ~= 5 and i ~= 6 then wanted[#wanted + 1] = {KEYS[i], 'string'} end
end
local refused = wrong_type(wanted)
if refused then return refused end

local mode, now, unit = ARGV[1], ARGV[2], ARGV[3]
local feature, segment = string.match(unit, '^(.-)%[(.+)%]$')
feature = feature or unit
local old_percent = redis.call('GET', KEYS[2]) or ''
if mode ~= 'nx' and old_percent == '' then
  return {'not_initialised', '', '', ''}
end
if mode == 'switch' and (redis.call('GET', KEYS[7]) or 'false') == ARGV[10] then
  return {'ok', '', old_percent, old_percent}
end

local written = {}
for i = 7, #KEYS do
  local value, current = ARGV[i + 3], redis.call('GET', KEYS[i])
  if current ~= value and not (mode == 'nx' and current) then
    redis.call('SET', KEYS[i], value)
    written[#written + 1] = KEYS[i]
  end
end
local new_percent = redis.call('GET', KEYS[2]) or ''
if #written == 0 then
  return {'ok', '', old_percent, new_percent}
end

if mode ~= 'nx' and new_percent ~= old_percent then
  if old_percent == '' or is_percent(old_percent) then  -- never copy an operator's typo along
    redis.call('SET', KEYS[3], old_percent == '' and '0' or old_percent)
  end
  redis.call('SET', KEYS[4], now)
end
local entry = {'time', now, 'feature', feature, 'old_percent', old_percent,
               'new_percent', new_percent, 'reason', ARGV[4], 'by', ARGV[5],
               'dry_run', 'false', 'action', ARGV[6], 'write_id', ARGV[7]}
if segment then
  entry[#entry + 1] = 'segment'
  entry[#entry + 1] = segment
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[8], '*', unpack(entry))
redis.call('HSET', KEYS[5], unit, ARGV[7] .. ' ' .. id)
redis.call('SADD', KEYS[6], feature)
redis.call('PUBLISH', ARGV[9], feature)
local reply = {'ok', id, old_percent, new_percent}
for _, key in ipairs(written) do
  reply[#reply + 1] = key
end
return reply
