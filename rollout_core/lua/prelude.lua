-- Shared by every write script: rollout_core.flags loads each script with this text in front,
-- so the percent grammar, the write deadline and the type checks are written once.

-- the percent grammar of rollout_sdk.flag_values: digits with an optional fraction, 0..100
-- (Lua's tonumber would also take '1e1', '0x10' and ' 10')
local function is_percent(text)
  if not (string.match(text, '^%d+%.?%d*$') or string.match(text, '^%.%d+$')) then
    return false
  end
  return tonumber(text) <= 100
end

-- A write id '<hex>@<deadline>' is refused once Redis's clock (TIME) is past the deadline
-- (milliseconds since the epoch, on Redis's clock): a call delayed in flight past its caller's
-- timeout never lands after the caller read back "not applied". An error reply, or nil.
local function expired(write_id)
  local deadline = tonumber(string.match(write_id, '@(%d+)$'))
  if not deadline then
    return nil
  end
  local clock = redis.call('TIME')
  if tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) > deadline then
    return redis.error_reply('EXPIRED write ' .. write_id
      .. ' reached Redis after its deadline; nothing written')
  end
  return nil
end

-- every key a script writes is type-checked before the first write: Redis never rolls a
-- script back, so a failing command after a SET would leave half a change and no audit entry.
-- `wanted` is a list of {key, type}; an error reply naming the first wrong key, or nil.
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

