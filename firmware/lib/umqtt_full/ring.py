# A fixed byte ring for messages published while the link is down: each entry
# is a two-byte length and an encoded PUBLISH (packet id left 0). When a new
# entry does not fit, the policy decides: drop the oldest entries (default, the
# freshest data survives), drop the new one, or raise MQTTException(0x97).
from .errors import MQTTException, QUOTA_EXCEEDED

DROP_OLDEST = 0
DROP_NEW = 1
ERROR = 2


class Ring:
    def __init__(self, size, policy=DROP_OLDEST, buf=None):
        self.buf = bytearray(size) if buf is None else buf
        self.mv = memoryview(self.buf)
        self.size = size
        self.policy = policy
        self.head = 0  # next entry to read
        self.used = 0  # bytes in use
        self.count = 0  # entries held
        self.dropped = 0  # entries lost to the policy

    def _put(self, pos, src, soff, n):
        # Copy src[soff:soff+n] to the ring at pos, wrapping at the end.
        k = self.size - pos
        if n <= k:
            self.buf[pos:pos + n] = src[soff:soff + n]
        else:
            self.buf[pos:] = src[soff:soff + k]
            self.buf[0:n - k] = src[soff + k:soff + n]

    def _get(self, pos, dst, n):
        k = self.size - pos
        if n <= k:
            dst[0:n] = self.mv[pos:pos + n]
        else:
            dst[0:k] = self.mv[pos:]
            dst[k:n] = self.mv[0:n - k]

    def _len_at(self, pos):
        return self.buf[pos] << 8 | self.buf[(pos + 1) % self.size]

    def drop_oldest(self):
        n = self._len_at(self.head)
        self.head = (self.head + 2 + n) % self.size
        self.used -= 2 + n
        self.count -= 1
        self.dropped += 1

    def put(self, src, n):
        # Store src[0:n]; True if stored, False if the policy dropped it.
        need = n + 2
        if need > self.size or n > 65535:
            self.dropped += 1
            if self.policy == ERROR:
                raise MQTTException(QUOTA_EXCEEDED, "message larger than the offline buffer")
            return False
        while self.size - self.used < need:
            if self.policy == DROP_OLDEST:
                self.drop_oldest()
            elif self.policy == DROP_NEW:
                self.dropped += 1
                return False
            else:
                raise MQTTException(QUOTA_EXCEEDED, "offline buffer full")
        pos = (self.head + self.used) % self.size
        self.buf[pos] = n >> 8
        self.buf[(pos + 1) % self.size] = n & 0xFF
        self._put((pos + 2) % self.size, src, 0, n)
        self.used += need
        self.count += 1
        return True

    def get(self, dst):
        # Move the oldest entry into dst[0:n]; return n, or 0 when empty.
        if not self.count:
            return 0
        n = self._len_at(self.head)
        if n > len(dst):
            self.drop_oldest()
            return 0
        self._get((self.head + 2) % self.size, dst, n)
        self.head = (self.head + 2 + n) % self.size
        self.used -= 2 + n
        self.count -= 1
        return n

    def clear(self):
        self.head = self.used = self.count = 0
