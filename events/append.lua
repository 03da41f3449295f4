-- The guarded append. Redis runs a script atomically but does not roll it back, so every check
-- comes before the first write: a batch that fails any check writes nothing anywhere.
--
-- KEYS: 1 thread stream, 2 thread meta, 3 event-id index, 4 partition feed (one hash tag)
-- ARGV: 1 the batch's control data, JSON: [thread id, expected version, events], each event
--         [event id, tag, guard, end scope, seal, size]: guard is the message the event must
--         not hang below once it is ended ('' = the root; a thread.ended's own leaf; false:
--         none), scope and seal (hex) are '' except on a thread.ended, size is the length of
--         its stored bytes
--       2 hashes, 32 bytes each: the head the batch continues, then each event's chain hash
--       3 the events' stored bytes, one after another
-- (Three arguments whatever the batch size: each argument costs the client more than the
-- server spends taking it apart.)
-- Reply: {'ok', first version, last version, head hash, replayed 0/1}
--     or {'err', code, ...} with code batch | idempotency | ended | version | chain

local MAX_BATCH = 64
local GENESIS = string.rep('\0', 32)

local control = cjson.decode(ARGV[1])
local thread_id, expected, batch = control[1], control[2], control[3]
local n = #batch
local prev = string.sub(ARGV[2], 1, 32)

local function hash(i)
  return string.sub(ARGV[2], 32 * i + 1, 32 * i + 32)
end

local stored = {}
local offset = 1
for i = 1, n do
  local size = batch[i][6]
  stored[i] = string.sub(ARGV[3], offset, offset + size - 1)
  offset = offset + size
end

local function data(i)
  return stored[i]
end

-- 1. The batch is well-formed.
if n < 1 or n > MAX_BATCH then
  return {'err', 'batch', 'a batch holds 1 to ' .. MAX_BATCH .. ' events, not ' .. n}
end
if #ARGV[2] ~= 32 * (n + 1) or offset ~= #ARGV[3] + 1 then
  return {'err', 'batch', 'the arguments do not match the batch size'}
end
if type(expected) ~= 'number' or expected < 0 or expected ~= math.floor(expected) then
  return {'err', 'batch', 'the expected version must be a whole number >= 0'}
end
local ids = {}
local seen = {}
local ending = {}
for i = 1, n do
  local id, tag, guard, scope = batch[i][1], batch[i][2], batch[i][3], batch[i][4]
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
  if guard and (ending['*'] or (guard ~= '' and ending[guard])) then
    return {'err', 'batch', 'event ' .. id .. ' follows an end in the same batch'}
  end
  if tag == 'thread.ended' then
    ending[guard] = true
    if scope == 'thread' then
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
    local fields_data, fields_hash = nil, nil
    for j = 1, #fields, 2 do
      if fields[j] == 'data' then
        fields_data = fields[j + 1]
      elseif fields[j] == 'hash' then
        fields_hash = fields[j + 1]
      end
    end
    if fields_data ~= data(i) then
      return {'err', 'idempotency', 'event id reused with different content', ids[i]}
    end
    head = fields_hash
  end
  return {'ok', first, first + n - 1, head, 1}
elseif present > 0 then
  return {'err', 'idempotency', 'some events of the batch are stored already', first_present}
end

-- 3. The ended lock, checked before the version so a stale writer learns why it cannot write.
-- One HMGET reads the version, the head, the thread-wide end and the end of each guard.
local wanted = {'version', 'head', 'thread_end'}
for i = 1, n do
  if batch[i][3] then
    wanted[#wanted + 1] = 'end:' .. batch[i][3]
  end
end
local meta = redis.call('HMGET', KEYS[2], unpack(wanted))
local version = meta[1] and tonumber(meta[1]) or 0
local thread_end = meta[3] and tonumber(meta[3]) or nil
local k = 3
for i = 1, n do
  local guard = batch[i][3]
  if guard then
    k = k + 1
    if thread_end then
      return {'err', 'ended', thread_end, ''}
    end
    if guard ~= '' and meta[k] then
      return {'err', 'ended', tonumber(meta[k]), guard}
    end
  end
end

-- 4. Optimistic concurrency.
if version ~= expected then
  return {'err', 'version', expected, version}
end

-- 5. The chain: the batch continues the stored head.
if prev ~= (meta[2] or GENESIS) then
  return {'err', 'chain', version, 'the batch does not continue the stored head hash'}
end

-- Writes. The first one also checks that the stream agrees with the meta: an explicit id at
-- or below the stream's last is refused, and then nothing has been written yet. Later ids are
-- higher, so once it succeeds every write does.
local index = {}
local meta_fields = {'version', expected + n, 'head', hash(n)}
for i = 1, n do
  local v = expected + i
  local id, tag, guard, scope, seal = batch[i][1], batch[i][2], batch[i][3], batch[i][4], batch[i][5]
  local added = redis.pcall(
    'XADD', KEYS[1], string.format('%d-0', v), 'type', tag, 'data', data(i), 'hash', hash(i))
  if type(added) == 'table' and added.err then
    return {'err', 'chain', version, 'the stream is ahead of the meta at version ' .. version}
  end
  redis.call('XADD', KEYS[4], '*', 'thread', thread_id, 'version', v, 'type', tag, 'data', data(i))
  index[#index + 1] = id
  index[#index + 1] = v
  if tag == 'thread.ended' then
    meta_fields[#meta_fields + 1] = 'end:' .. guard
    meta_fields[#meta_fields + 1] = v
    meta_fields[#meta_fields + 1] = 'seal:' .. v
    meta_fields[#meta_fields + 1] = seal
    if scope == 'thread' then
      meta_fields[#meta_fields + 1] = 'thread_end'
      meta_fields[#meta_fields + 1] = v
    end
  end
end
redis.call('HSET', KEYS[3], unpack(index))
redis.call('HSET', KEYS[2], unpack(meta_fields))
return {'ok', expected + 1, expected + n, hash(n), 0}
