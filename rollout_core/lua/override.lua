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

local too_late = expired(ARGV[8])
if too_late then return too_late end

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
