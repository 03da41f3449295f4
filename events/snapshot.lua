-- A consistent read of a thread for the verifier: its meta, its index, and the stream's
-- last-generated id (the highest id the stream has ever had: an entry id pushed past the meta,
-- even one deleted since, shows there), all at one instant. Entries up to the meta's version
-- never change, so they can be read afterwards, in pages.
-- KEYS: 1 thread stream, 2 thread meta, 3 thread index
local last_id = '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      last_id = info[i + 1]
    end
  end
end
return {redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]), last_id}
