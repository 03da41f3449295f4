-- Write the views of several threads of one partition, each with its checkpoint, so a
-- redelivered feed entry changes nothing. A thread whose view is no longer at the version the
-- projector read is left alone (and named in the reply); the others are written.
-- KEYS: the threads' view hashes (1..n), then the analytics hashes (same hash tag)
-- ARGV[1]: JSON, for each thread in KEYS' order: [the version its view must still be at, the
--          version it moves to, [summary field, value, ...], [[index into KEYS, counter,
--          amount], ...]]
-- Reply: the indexes of the threads left alone
local plans = cjson.decode(ARGV[1])
local left = {}
for t = 1, #plans do
  local expected, new, fields, counted = plans[t][1], plans[t][2], plans[t][3], plans[t][4]
  if tonumber(redis.call('HGET', KEYS[t], 'version') or '0') ~= expected then
    left[#left + 1] = t
  else
    redis.call('HSET', KEYS[t], 'version', string.format('%d', new), unpack(fields))
    for c = 1, #counted do
      local at, counter, amount = counted[c][1], counted[c][2], counted[c][3]
      redis.call('HINCRBY', KEYS[at], counter, string.format('%d', amount))
    end
  end
end
return left
