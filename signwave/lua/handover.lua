-- Pass the lock from one owner to the next (or renew it, when both are the same),
-- extending its TTL. A lock lost with a Redis restart is re-created: the
-- database lease, checked before this, is the authority.
-- KEYS[1] lock key; ARGV[1] current owner; ARGV[2] new owner; ARGV[3] TTL in ms.
-- Returns 1 on success, 0 if somebody else holds the lock.
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] and current ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
