-- A consistent read of a thread for the verifier: its meta, its index, and the id of the
-- stream's last entry, all at one instant. Entries up to the meta's version never change, so
-- they can be read afterwards, in pages.
-- KEYS: 1 thread stream, 2 thread meta, 3 thread index
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last_id = '0-0'
if #last > 0 then
  last_id = last[1][1]
end
return {redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]), last_id}
