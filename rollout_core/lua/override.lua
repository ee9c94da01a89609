-- An audited per-workspace or per-actor override of one feature, in one atomic step: the
-- overrides hash field is set (or cleared), an audit entry appended, a change notice published.
-- A feature that is not initialised (no rollout_percent key) is refused with nothing written.
--
-- The write id is recorded with the entry and in the last-write hash, so a write whose reply
-- was lost can be read back; the stream is trimmed approximately like every other write.
--
-- KEYS: 1 the overrides hash flags:{f}:overrides, 2 rollout_percent, 3 the audit stream,
--       4 the last-write hash
-- ARGV: 1 field ('workspace:<id>' | 'actor:<id>'), 2 value ('true' | 'false' | '' = clear),
--       3 time, 4 feature, 5 reason as audited, 6 by, 7 the change notice channel,
--       8 write id, 9 audit retention (entries, trimmed approximately)
-- Returns {status, old value ('' = none), audit entry id ('' = nothing written)}
-- where status is written | unchanged | not_initialised.

-- A write id '<hex>@<deadline>' is refused once Redis's clock (TIME) is past the deadline
-- (milliseconds since the epoch, on Redis's clock): a call delayed in flight past its caller's
-- timeout never lands after the caller read back "not applied".
local deadline = tonumber(string.match(ARGV[8], '@(%d+)$'))
if deadline then
  local clock = redis.call('TIME')
  if tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) > deadline then
    return redis.error_reply('EXPIRED write ' .. ARGV[8] .. ' reached Redis after its deadline; nothing written')
  end
end

-- every key the script writes is type-checked before the first write: Redis never rolls a
-- script back, so a failing command after a SET would leave half a change and no audit entry
local function wrong_type(wanted)
  for _, pair in ipairs(wanted) do
    local found = redis.call('TYPE', pair[1])['ok']
    if found ~= 'none' and found ~= pair[2] then
      return redis.error_reply(pair[1] .. ' holds a ' .. found .. ', not a ' .. pair[2]
        .. '; nothing was written; inspect it (redis-cli TYPE ' .. pair[1] .. ') and remove '
        .. 'it (redis-cli DEL ' .. pair[1] .. '), then run again')
    end
  end
  return nil
end

local refused = wrong_type({{KEYS[1], 'hash'}, {KEYS[2], 'string'}, {KEYS[3], 'stream'},
                            {KEYS[4], 'hash'}})
if refused then return refused end

local percent = redis.call('GET', KEYS[2])
if not percent then
  return {'not_initialised', '', ''}
end
local field, value = ARGV[1], ARGV[2]
local old = redis.call('HGET', KEYS[1], field) or ''
if old == value then
  return {'unchanged', old, ''}
end
if value == '' then
  redis.call('HDEL', KEYS[1], field)
else
  redis.call('HSET', KEYS[1], field, value)
end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*', 'time', ARGV[3],
                      'feature', ARGV[4], 'old_percent', percent, 'new_percent', percent,
                      'reason', ARGV[5], 'by', ARGV[6], 'dry_run', 'false', 'action', 'override',
                      'write_id', ARGV[8])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[8] .. ' ' .. id)
redis.call('PUBLISH', ARGV[7], ARGV[4])
return {'written', old, id}
