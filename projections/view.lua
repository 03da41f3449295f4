-- Write the views of several threads of one partition, each with its checkpoint, so a
-- redelivered feed entry changes nothing. A thread whose view is no longer at the version the
-- projector read is left alone (and named in the reply); the others are written.
-- KEYS: the threads' view hashes (1..n), then the analytics hashes (same hash tag)
-- ARGV: 1 n, then for each thread: the version its view must still be at, the version it moves
--       to, the number of summary fields f and f field/value pairs, the number of increments c
--       and c triples: index into KEYS, field, amount
-- Reply: the indexes of the threads left alone
local n = tonumber(ARGV[1])
local i = 2
local left = {}
for t = 1, n do
  local expected, new, f = tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2])
  local fields_at = i + 3
  local c = tonumber(ARGV[fields_at + 2 * f])
  local increments_at = fields_at + 2 * f + 1
  i = increments_at + 3 * c
  if tonumber(redis.call('HGET', KEYS[t], 'version') or '0') ~= expected then
    left[#left + 1] = t
  else
    local fields = {'version', new}
    for k = 0, f - 1 do
      fields[#fields + 1] = ARGV[fields_at + 2 * k]
      fields[#fields + 1] = ARGV[fields_at + 2 * k + 1]
    end
    redis.call('HSET', KEYS[t], unpack(fields))
    for k = 0, c - 1 do
      local at = increments_at + 3 * k
      redis.call('HINCRBY', KEYS[tonumber(ARGV[at])], ARGV[at + 1], ARGV[at + 2])
    end
  end
end
return left
