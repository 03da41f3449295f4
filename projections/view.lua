-- Write a thread's view and its checkpoint together, so a redelivered feed entry changes nothing.
-- KEYS: 1 the thread's view hash, 2.. the analytics hashes the events count in (same hash tag)
-- ARGV: 1 the version the view must still be at, 2 the version it moves to,
--       3 the number of summary fields n, then n field/value pairs,
--       then increments as triples: index into KEYS, field, amount
-- Reply: -1 once written, or the version the view is at when that is not ARGV[1]
local at = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if at ~= tonumber(ARGV[1]) then
  return at
end
local n = tonumber(ARGV[3])
local fields = {'version', ARGV[2]}
for i = 1, n do
  fields[#fields + 1] = ARGV[2 + 2 * i]
  fields[#fields + 1] = ARGV[3 + 2 * i]
end
redis.call('HSET', KEYS[1], unpack(fields))
for i = 4 + 2 * n, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
end
return -1
