# The broker's preallocated tables: a byte-copy helper that does not slice, the
# stored-message pool and the subscription table. Sizes are fixed at start;
# nothing here grows while the broker runs.
from array import array
from .topic import match

try:
    import micropython

    @micropython.viper
    def copy(dst: ptr8, doff: int, src: ptr8, soff: int, n: int):
        # Forward copy; safe for moving bytes down inside one buffer.
        i = 0
        while i < n:
            dst[doff + i] = src[soff + i]
            i += 1

    @micropython.viper
    def same(a: ptr8, aoff: int, b: ptr8, boff: int, n: int) -> bool:
        i = 0
        while i < n:
            if a[aoff + i] != b[boff + i]:
                return False
            i += 1
        return True
except (ImportError, AttributeError, SyntaxError, NameError):
    def copy(dst, doff, src, soff, n):
        dst[doff:doff + n] = memoryview(src)[soff:soff + n]

    def same(a, aoff, b, boff, n):
        return memoryview(a)[aoff:aoff + n] == memoryview(b)[boff:boff + n]


class Pool:
    # Messages that outlive the packet they came in: queued for an offline or
    # slow session, in flight at QoS 1/2 (kept for a resend), or retained. n
    # slot buffers of size bytes (separate, so a fragmented heap can hold
    # them), each topic | properties | payload, shared by reference count
    # between the sessions and the retained table.
    def __init__(self, n, size):
        self.n = n
        self.size = size
        self.bufs = [bytearray(size) for _ in range(n)]
        self.tn = array("H", [0] * n)   # topic length
        self.pn = array("H", [0] * n)   # v5 properties to pass on (no alias/sub id/expiry)
        self.ln = array("H", [0] * n)   # payload length
        self.ref = array("H", [0] * n)
        self.qos = bytearray(n)
        self.exp = array("i", [-1] * n)  # expiry, broker seconds; -1 never
        self.used = 0
        self.hint = 0

    def alloc(self, tn, pn, ln):
        # A free slot with ref 1, or -1 when the pool is full or the message
        # does not fit a slot.
        if tn + pn + ln > self.size:
            return -1
        n = self.n
        i = self.hint
        k = 0
        while k < n:
            if not self.ref[i]:
                self.ref[i] = 1
                self.tn[i] = tn
                self.pn[i] = pn
                self.ln[i] = ln
                self.exp[i] = -1
                self.used += 1
                self.hint = i + 1 if i + 1 < n else 0
                return i
            i = i + 1 if i + 1 < n else 0
            k += 1
        return -1

    def hold(self, i):
        self.ref[i] += 1

    def release(self, i):
        r = self.ref[i]
        if r:
            self.ref[i] = r - 1
            if r == 1:
                self.used -= 1


class Subs:
    # The subscription table: fixed rows of (owning session, filter bytes,
    # options, subscription id). A shared subscription keeps "$share/g/f" with
    # foff pointing at f, so matching and the group name need no other store.
    def __init__(self, n, width):
        self.n = n
        self.w = width
        self.buf = bytearray(n * width)
        self.flen = array("H", [0] * n)
        self.foff = array("H", [0] * n)
        self.owner = array("h", [-1] * n)
        self.opts = bytearray(n)
        self.subid = array("I", [0] * n)
        self.seq = array("I", [0] * n)   # shared: last delivery number, for round robin
        self.count = 0
        self.top = 0                     # rows past top are all free

    def find(self, sess, f):
        w = self.w
        fl = len(f)
        for i in range(self.top):
            if self.owner[i] == sess and self.flen[i] == fl and self.buf.find(f, i * w, i * w + fl) == i * w:
                return i
        return -1

    def add(self, sess, f, foff, opts, subid):
        # Replace the session's row for this filter or take a free one.
        # Returns (row, existed); row -1 when the table is full.
        i = self.find(sess, f)
        existed = i >= 0
        if i < 0:
            for j in range(self.n):
                if self.owner[j] < 0:
                    i = j
                    break
            if i < 0:
                return -1, False
            b = i * self.w
            self.buf[b:b + len(f)] = f
            self.flen[i] = len(f)
            self.foff[i] = foff
            self.owner[i] = sess
            self.seq[i] = 0
            self.count += 1
            if i >= self.top:
                self.top = i + 1
        self.opts[i] = opts
        self.subid[i] = subid
        return i, existed

    def free(self, i):
        self.owner[i] = -1
        self.count -= 1
        while self.top and self.owner[self.top - 1] < 0:
            self.top -= 1

    def remove(self, sess, f):
        i = self.find(sess, f)
        if i < 0:
            return False
        self.free(i)
        return True

    def drop(self, sess):
        for i in range(self.top):
            if self.owner[i] == sess:
                self.free(i)

    def match(self, i, tb, to, tn):
        b = i * self.w + self.foff[i]
        return match(self.buf, b, self.flen[i] - self.foff[i], tb, to, tn)

    def same_group(self, i, j):
        # Rows i and j are the same shared subscription ($share/g/f alike).
        n = self.flen[i]
        return n == self.flen[j] and self.foff[i] == self.foff[j] and \
            same(self.buf, i * self.w, self.buf, j * self.w, n)
