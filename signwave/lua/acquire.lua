-- Take the lock on one signing key.
-- KEYS[1] lock key; ARGV[1] owner; ARGV[2] TTL in ms; ARGV[3] "1" to take it
-- over from a holder the database already declared dead.
-- Returns the previous owner, or false if the lock was free.
local previous = redis.call('GET', KEYS[1])
if previous and ARGV[3] ~= '1' then
  return previous
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return previous
