-- The guarded append. Redis runs a script atomically but does not roll it back, so every check
-- comes before the first write: a batch that fails any check writes nothing anywhere.
--
-- KEYS: 1 thread stream, 2 thread meta, 3 thread index, 4 partition feed (one hash tag)
-- ARGV: 1 control data, JSON: [thread id, expected version, events, head seal (hex)], each
--         event [event id, tag, guard, message, role, edited, end scope, end seal (hex), size]:
--         guard    the message the event hangs below ('' = the root) if it continues a branch;
--                  a thread.ended's leaf; false for anything else
--         message  the message the event posts or continues (a reply's id, a fork's new id)
--         role     'u' for a user message, 'a' for a reply, '' otherwise
--         edited   the message a branch.forked edits
--         size     the length of the event's stored bytes
--       2 hashes, 32 bytes each: the head the batch continues, then each event's chain hash
--       3 the events' stored bytes, one after another
-- (Three arguments whatever the batch size: each argument costs the client more than the
-- server spends taking it apart.)
--
-- The index holds e:<event id> -> '<version>:<first>:<last>' (the batch it came in),
-- m:<message id> -> role .. parent ('' = the root), c:<message id> -> 1 once a message has
-- anything below it ('c:' for the root), f:<reply id> -> 1 once its generation is over. The meta holds version, head, head_seal, end:<leaf> -> version,
-- thread_end -> version, seal:<version> -> seal of an end.
--
-- Reply: {'ok', first version, last version, head hash, replayed 0/1}
--     or {'err', code, ...} with code batch | idempotency | ended | version | chain

local MAX_BATCH = 64
local GENESIS = string.rep('\0', 32)
local ENDED = 'thread.ended'

local control = cjson.decode(ARGV[1])
local thread_id, expected, batch, head_seal = control[1], control[2], control[3], control[4]
local n = #batch

local function fail(code, a, b)
  return {'err', code, a, b}
end

-- 1. The batch is well-formed.
if n < 1 or n > MAX_BATCH then
  return fail('batch', 'a batch holds 1 to ' .. MAX_BATCH .. ' events, not ' .. n)
end
if type(expected) ~= 'number' or expected < 0 or expected ~= math.floor(expected) then
  return fail('batch', 'the expected version must be a whole number >= 0')
end
local stored, offset = {}, 1
for i = 1, n do
  stored[i] = string.sub(ARGV[3], offset, offset + batch[i][9] - 1)
  offset = offset + batch[i][9]
end
if #ARGV[2] ~= 32 * (n + 1) or offset ~= #ARGV[3] + 1 then
  return fail('batch', 'the arguments do not match the batch size')
end
local function hash(i)
  return string.sub(ARGV[2], 32 * i + 1, 32 * i + 32)
end

local seen = {}
for i = 1, n do
  local id = batch[i][1]
  if id == '' then
    return fail('batch', 'event ' .. i .. ' has no id')
  end
  if seen[id] then
    return fail('batch', 'event id ' .. id .. ' appears twice in the batch')
  end
  seen[id] = true
end

-- One HMGET of the index serves idempotency (e:) and the message tree (m:, c:).
local fields = {}
for i = 1, n do
  fields[i] = 'e:' .. batch[i][1]
end
for i = 1, n do
  local guard, message, edited = batch[i][3], batch[i][4], batch[i][6]
  if guard then
    fields[#fields + 1] = 'c:' .. guard
  end
  if guard and guard ~= '' then
    fields[#fields + 1] = 'm:' .. guard
  end
  if message ~= '' then
    fields[#fields + 1] = 'm:' .. message
  end
  if batch[i][5] == 'a' then
    fields[#fields + 1] = 'f:' .. message
  end
  if edited ~= '' then
    fields[#fields + 1] = 'm:' .. edited
  end
end
local values = redis.call('HMGET', KEYS[3], unpack(fields))
local index = {}
for i = 1, #fields do
  index[fields[i]] = values[i]
end

-- 2. Idempotency: the very batch stored before returns its original result, writes nothing.
local present, first_present = 0, nil
for i = 1, n do
  if values[i] then
    present = present + 1
    first_present = first_present or batch[i][1]
  end
end
if present == n then
  local first, last = nil, nil
  for i = 1, n do
    local v, f, l = string.match(values[i], '^(%d+):(%d+):(%d+)$')
    if not v then
      return fail('chain', 0, 'the index entry of ' .. batch[i][1] .. ' is unreadable')
    end
    first, last = first or tonumber(f), last or tonumber(l)
    if tonumber(v) ~= first + i - 1 or tonumber(f) ~= first or tonumber(l) ~= last
        or last - first + 1 ~= n then
      return fail('idempotency', 'the events were stored, but not as this batch', batch[i][1])
    end
  end
  local entries = redis.call(
    'XRANGE', KEYS[1], string.format('%d-0', first), string.format('%d-0', last))
  if #entries ~= n then
    return fail('chain', first, 'the index names versions the stream lacks')
  end
  local head = nil
  for i = 1, n do
    local f = entries[i][2]
    local data, h = nil, nil
    for j = 1, #f, 2 do
      if f[j] == 'data' then
        data = f[j + 1]
      elseif f[j] == 'hash' then
        h = f[j + 1]
      end
    end
    if data ~= stored[i] then
      return fail('idempotency', 'event id reused with different content', batch[i][1])
    end
    head = h
  end
  return {'ok', first, last, head, 1}
elseif present > 0 then
  return fail('idempotency', 'some events of the batch are stored already', first_present)
end

-- 3. The batch's own shape: thread.started first and only first; nothing after an end it makes.
local ending, thread_ending = {}, false
for i = 1, n do
  local id, tag, guard, message, scope = batch[i][1], batch[i][2], batch[i][3], batch[i][4], batch[i][7]
  if tag == 'thread.started' and not (expected == 0 and i == 1) then
    return fail('batch', 'thread.started can only be the first event of a thread')
  end
  if tag ~= 'thread.started' and expected == 0 and i == 1 then
    return fail('batch', 'a thread begins with thread.started, not ' .. tag)
  end
  if tag == ENDED then
    if thread_ending or (scope ~= 'thread' and ending[guard]) then
      return fail('batch', 'event ' .. id .. ' ends what this batch already ended')
    end
    ending[guard] = true
    thread_ending = thread_ending or scope == 'thread'
  elseif guard then
    if thread_ending or ending[guard] or (batch[i][5] == 'a' and ending[message]) then
      return fail('batch', 'event ' .. id .. ' follows an end in the same batch')
    end
  end
  if tag == 'branch.forked' then
    local post = batch[i + 1]
    if not post or post[2] ~= 'message.posted' or post[4] ~= message or post[3] ~= guard then
      return fail('batch', 'a branch.forked is followed by the message.posted of ' .. message)
    end
  end
end

-- 4. The ended lock, checked before the version so a stale writer learns why it cannot write.
-- One HMGET reads the version, the head, the thread-wide end and every end the batch touches.
local wanted = {'version', 'head', 'thread_end'}
for i = 1, n do
  local guard, message, role = batch[i][3], batch[i][4], batch[i][5]
  if guard and guard ~= '' then
    wanted[#wanted + 1] = 'end:' .. guard
  end
  if role == 'a' then
    wanted[#wanted + 1] = 'end:' .. message
  end
end
local got = redis.call('HMGET', KEYS[2], unpack(wanted))
local meta = {}
for i = 1, #wanted do
  if got[i] and wanted[i] ~= 'head' and not string.match(got[i], '^%d+$') then
    return fail('chain', 0, 'the meta field ' .. wanted[i] .. ' is not a number')
  end
  meta[wanted[i]] = got[i]
end
local version = tonumber(meta['version'] or '0')
local thread_end = meta['thread_end'] and tonumber(meta['thread_end'])
for i = 1, n do
  local tag, guard, message, role, scope = batch[i][2], batch[i][3], batch[i][4], batch[i][5], batch[i][7]
  if guard then
    if thread_end then
      return fail('ended', thread_end, '')
    end
    -- A thread-wide end may name a leaf whose branch was ended before.
    local leaf_ok = tag == ENDED and scope == 'thread'
    if guard ~= '' and meta['end:' .. guard] and not leaf_ok then
      return fail('ended', tonumber(meta['end:' .. guard]), guard)
    end
    -- A generation ended while in flight cannot go on.
    if role == 'a' and meta['end:' .. message] then
      return fail('ended', tonumber(meta['end:' .. message]), message)
    end
  end
end

-- 5. Optimistic concurrency.
if version ~= expected then
  return fail('version', expected, version)
end

-- 6. The chain: the batch continues the stored head.
if string.sub(ARGV[2], 1, 32) ~= (meta['head'] or GENESIS) then
  return fail('chain', version, 'the batch does not continue the stored head hash')
end

-- 7. The message tree: parents exist and have the right role, ids are new, a generation ends
-- once, an end names the tip of a branch.
local added, below, finished = {}, {}, {}
local function message_of(id)
  return added[id] or index['m:' .. id]
end
local function has_children(id)
  return below[id] or index['c:' .. id]
end
for i = 1, n do
  local tag, guard, message, role, edited, scope =
    batch[i][2], batch[i][3], batch[i][4], batch[i][5], batch[i][6], batch[i][7]
  if tag == ENDED then
    if not message_of(guard) then
      return fail('batch', 'the end names ' .. guard .. ', which is not a message of this thread')
    end
    if scope ~= 'thread' and has_children(guard) then
      return fail('batch', 'the end names ' .. guard .. ', which is not the tip of a branch')
    end
  elseif guard then
    if guard ~= '' then
      local parent = message_of(guard)
      if not parent then
        return fail('batch', guard .. ' is not a message of this thread')
      end
      local wants = role == 'a' and 'u' or 'a'
      if string.sub(parent, 1, 1) ~= wants then
        local kind = role == 'a' and 'a reply answers a user message' or
          'a user message hangs below a reply or the root'
        return fail('batch', kind .. ', and ' .. guard .. ' is not one')
      end
    end
    local existing = message_of(message)
    if tag == 'branch.forked' then
      local original = message_of(edited)
      if not original or string.sub(original, 1, 1) ~= 'u' then
        return fail('batch', 'the edited message ' .. edited .. ' is not a user message here')
      end
      if string.sub(original, 2) ~= guard then
        return fail('batch', 'the edited message ' .. edited .. ' does not hang below ' .. guard)
      end
      if existing then
        return fail('batch', 'message id ' .. message .. ' is taken')
      end
    elseif role == 'u' then
      if existing then
        return fail('batch', 'message id ' .. message .. ' is taken')
      end
      -- A second user message below the same parent is an edit, and an edit is recorded.
      local forked = i > 1 and batch[i - 1][2] == 'branch.forked' and batch[i - 1][4] == message
      if has_children(guard) and not forked then
        local where = guard == '' and 'the root' or guard
        return fail('batch', where .. ' has a message below it: a new one is an edit, '
          .. 'sent as branch.forked then message.posted')
      end
      added[message] = 'u' .. guard
    elseif tag == 'reply.started' then
      if existing then
        return fail('batch', 'message id ' .. message .. ' is taken')
      end
      added[message] = 'a' .. guard
    else
      if existing and existing ~= 'a' .. guard then
        return fail('batch', message .. ' is a message of this thread, not a reply to ' .. guard)
      end
      if finished[message] or index['f:' .. message] then
        return fail('batch', 'the generation of ' .. message .. ' is over')
      end
      added[message] = existing or ('a' .. guard)
      finished[message] = true
    end
    below[guard] = true
  end
end

-- A feed key of another type would fail its XADD after the stream's: fail now instead.
redis.call('XLEN', KEYS[4])

-- Writes. The first also checks that the stream agrees with the meta: Redis refuses an explicit
-- id at or below the stream's last, and then nothing has been written yet. Later ids are
-- higher, so once it succeeds every write does.
local last = expected + n
local index_fields, meta_fields = {}, {'version', last, 'head', hash(n), 'head_seal', head_seal}
for i = 1, n do
  local v = expected + i
  local id, tag, guard, scope, seal = batch[i][1], batch[i][2], batch[i][3], batch[i][7], batch[i][8]
  local res = redis.pcall(
    'XADD', KEYS[1], string.format('%d-0', v), 'type', tag, 'data', stored[i], 'hash', hash(i))
  if type(res) == 'table' and res.err then
    local err = tostring(res.err)
    if i == 1 and string.find(err, 'equal or smaller', 1, true) then
      return fail('chain', version, 'the stream is ahead of the meta at version ' .. version)
    end
    return redis.error_reply(err)
  end
  redis.call('XADD', KEYS[4], '*', 'thread', thread_id, 'version', v, 'type', tag, 'data', stored[i])
  index_fields[#index_fields + 1] = 'e:' .. id
  index_fields[#index_fields + 1] = string.format('%d:%d:%d', v, expected + 1, last)
  if tag == ENDED then
    -- A leaf keeps the version of its first end (a thread-wide end may follow a branch end).
    if not meta['end:' .. guard] then
      meta['end:' .. guard] = v
      meta_fields[#meta_fields + 1] = 'end:' .. guard
      meta_fields[#meta_fields + 1] = v
    end
    meta_fields[#meta_fields + 1] = 'seal:' .. v
    meta_fields[#meta_fields + 1] = seal
    if scope == 'thread' then
      meta_fields[#meta_fields + 1] = 'thread_end'
      meta_fields[#meta_fields + 1] = v
    end
  end
end
for id, value in pairs(added) do
  if not index['m:' .. id] then
    index_fields[#index_fields + 1] = 'm:' .. id
    index_fields[#index_fields + 1] = value
  end
end
for id, _ in pairs(finished) do
  index_fields[#index_fields + 1] = 'f:' .. id
  index_fields[#index_fields + 1] = 1
end
for id, _ in pairs(below) do
  if not index['c:' .. id] then
    index_fields[#index_fields + 1] = 'c:' .. id
    index_fields[#index_fields + 1] = 1
  end
end
redis.call('HSET', KEYS[3], unpack(index_fields))
redis.call('HSET', KEYS[2], unpack(meta_fields))
return {'ok', expected + 1, last, hash(n), 0}
