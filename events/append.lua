-- The guarded append. Redis runs a script atomically but does not roll it back, so every check
-- comes before the first write: a batch that fails any check writes nothing anywhere.
--
-- KEYS: 1 thread stream, 2 thread meta, 3 event-id index, 4 partition feed (one hash tag)
-- ARGV: 1 thread id, 2 expected version, 3 prev hash (the head the batch continues),
--       4 number of events n, then per event 9 values:
--       event id, tag, attaches ('1'/'0'), parent ('' = root), ended leaf, end scope,
--       stored bytes, chain hash, seal ('' unless the event is a thread.ended)
-- Reply: {'ok', first version, last version, head hash, replayed 0/1}
--     or {'err', code, ...} with code batch | idempotency | ended | version | chain

local FIELDS = 9
local MAX_BATCH = 64
local GENESIS = string.rep('\0', 32)

local thread_id = ARGV[1]
local expected = tonumber(ARGV[2])
local prev = ARGV[3]
local n = tonumber(ARGV[4])

local function arg(i, k)
  return ARGV[4 + (i - 1) * FIELDS + k]
end

-- The message an event must not hang below once it is ended: its parent if it continues a
-- branch ('' for the root), the leaf it ends for a thread.ended, nil for anything else.
local function guarded(i)
  if arg(i, 3) == '1' then
    return arg(i, 4)
  elseif arg(i, 2) == 'thread.ended' then
    return arg(i, 5)
  end
  return nil
end

-- 1. The batch is well-formed.
if n == nil or n < 1 or n > MAX_BATCH or n ~= math.floor(n) then
  return {'err', 'batch', 'a batch holds 1 to ' .. MAX_BATCH .. ' events, not ' .. tostring(ARGV[4])}
end
if #ARGV ~= 4 + n * FIELDS then
  return {'err', 'batch', 'the arguments do not match the batch size'}
end
if expected == nil or expected < 0 or expected ~= math.floor(expected) then
  return {'err', 'batch', 'the expected version must be a whole number >= 0'}
end
local ids = {}
local seen = {}
local ending = {}
for i = 1, n do
  local id, tag = arg(i, 1), arg(i, 2)
  if id == '' then
    return {'err', 'batch', 'event ' .. i .. ' has no id'}
  end
  if seen[id] then
    return {'err', 'batch', 'event id ' .. id .. ' appears twice in the batch'}
  end
  seen[id] = true
  ids[i] = id
  if tag == 'thread.started' and not (expected == 0 and i == 1) then
    return {'err', 'batch', 'thread.started can only be the first event of a thread'}
  end
  if tag ~= 'thread.started' and expected == 0 and i == 1 then
    return {'err', 'batch', 'a thread begins with thread.started, not ' .. tag}
  end
  local below = guarded(i)
  if below ~= nil and (ending['*'] or (below ~= '' and ending[below])) then
    return {'err', 'batch', 'event ' .. id .. ' follows an end in the same batch'}
  end
  if tag == 'thread.ended' then
    ending[arg(i, 5)] = true
    if arg(i, 6) == 'thread' then
      ending['*'] = true
    end
  end
end

-- 2. Idempotency: a batch stored before returns its original result and writes nothing.
local found = redis.call('HMGET', KEYS[3], unpack(ids))
local present = 0
local first_present = nil
for i = 1, n do
  if found[i] then
    present = present + 1
    first_present = first_present or ids[i]
  end
end
if present == n then
  local first = tonumber(found[1])
  local head = nil
  for i = 1, n do
    local v = tonumber(found[i])
    if v ~= first + i - 1 then
      return {'err', 'idempotency', 'the events were stored in another order or batch', ids[i]}
    end
    local entry = redis.call('XRANGE', KEYS[1], string.format('%d-0', v), string.format('%d-0', v))
    if #entry == 0 then
      return {'err', 'chain', v, 'the index names version ' .. v .. ', which the stream lacks'}
    end
    local fields = entry[1][2]
    local data, hash = nil, nil
    for j = 1, #fields, 2 do
      if fields[j] == 'data' then
        data = fields[j + 1]
      elseif fields[j] == 'hash' then
        hash = fields[j + 1]
      end
    end
    if data ~= arg(i, 7) then
      return {'err', 'idempotency', 'event id reused with different content', ids[i]}
    end
    head = hash
  end
  return {'ok', first, first + n - 1, head, 1}
elseif present > 0 then
  return {'err', 'idempotency', 'some events of the batch are stored already', first_present}
end

-- 3. The ended lock, checked before the version so a stale writer learns why it cannot write.
local meta = redis.call('HMGET', KEYS[2], 'version', 'head', 'thread_end')
local version = meta[1] and tonumber(meta[1]) or 0
local thread_end = meta[3] and tonumber(meta[3]) or nil
for i = 1, n do
  local blocked_by = guarded(i)
  if blocked_by ~= nil then
    if thread_end then
      return {'err', 'ended', thread_end, ''}
    end
    if blocked_by ~= '' then
      local v = redis.call('HGET', KEYS[2], 'end:' .. blocked_by)
      if v then
        return {'err', 'ended', tonumber(v), blocked_by}
      end
    end
  end
end

-- 4. Optimistic concurrency.
if version ~= expected then
  return {'err', 'version', expected, version}
end

-- 5. The chain: the batch continues the stored head, and the stream agrees with the meta.
local head = meta[2] or GENESIS
if prev ~= head then
  return {'err', 'chain', version, 'the batch does not continue the stored head hash'}
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last_id = (#last > 0) and last[1][1] or '0-0'
if last_id ~= string.format('%d-0', version) then
  return {'err', 'chain', version, 'the stream ends at ' .. last_id .. ', the meta at version ' .. version}
end

-- Writes.
local index = {}
local meta_fields = {'version', expected + n, 'head', arg(n, 8)}
for i = 1, n do
  local v = expected + i
  local tag, data = arg(i, 2), arg(i, 7)
  redis.call('XADD', KEYS[1], string.format('%d-0', v), 'type', tag, 'data', data, 'hash', arg(i, 8))
  redis.call('XADD', KEYS[4], '*', 'thread', thread_id, 'version', v, 'type', tag, 'data', data)
  index[#index + 1] = ids[i]
  index[#index + 1] = v
  if tag == 'thread.ended' then
    meta_fields[#meta_fields + 1] = 'end:' .. arg(i, 5)
    meta_fields[#meta_fields + 1] = v
    meta_fields[#meta_fields + 1] = 'seal:' .. v
    meta_fields[#meta_fields + 1] = arg(i, 9)
    if arg(i, 6) == 'thread' then
      meta_fields[#meta_fields + 1] = 'thread_end'
      meta_fields[#meta_fields + 1] = v
    end
  end
end
redis.call('HSET', KEYS[3], unpack(index))
redis.call('HSET', KEYS[2], unpack(meta_fields))
return {'ok', expected + 1, expected + n, arg(n, 8), 0}
