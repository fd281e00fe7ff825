-- Compare-and-delete: only the owner releases the lock.
-- KEYS[1] lock key; ARGV[1] owner. Returns 1 if released, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
