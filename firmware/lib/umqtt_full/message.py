# The zero-copy receive view: one reused object whose fields are offsets into
# the client's buffers, plus a byte copy that does not allocate.
from .codec import publish_props

try:
    import micropython

    @micropython.viper
    def _copy(dst: ptr8, doff: int, src: ptr8, soff: int, n: int):
        i = 0
        while i < n:
            dst[doff + i] = src[soff + i]
            i += 1
except Exception:
    def _copy(dst, doff, src, soff, n):
        for i in range(n):
            dst[doff + i] = src[soff + i]


class Message:
    # The zero-copy view of a received PUBLISH (set_callback(cb, zero_copy=True)).
    # One object, reused: its fields are offsets into buffers the client owns
    # and are valid only until the callback returns. Helpers copy on demand.
    def __init__(self, client):
        self._c = client
        self.buf = None  # holds the payload (the receive buffer)
        self.topic_buf = None  # holds the topic (receive buffer or alias table)
        self.topic_off = 0
        self.topic_len = 0
        self.payload_off = 0
        self.payload_len = 0
        self.qos = 0
        self.retain = False
        self.dup = False
        self.pid = 0

    def topic(self):
        return bytes(memoryview(self.topic_buf)[self.topic_off:self.topic_off + self.topic_len])

    def payload(self):
        return bytes(memoryview(self.buf)[self.payload_off:self.payload_off + self.payload_len])

    def topic_view(self):
        return memoryview(self.topic_buf)[self.topic_off:self.topic_off + self.topic_len]

    def payload_view(self):
        return memoryview(self.buf)[self.payload_off:self.payload_off + self.payload_len]

    def topic_is(self, t):
        # Compare without allocating; t is bytes.
        n = self.topic_len
        return len(t) == n and self.topic_buf.find(t, self.topic_off, self.topic_off + n) == self.topic_off

    def copy_payload(self, dst, off=0):
        # Copy the payload into dst at off without allocating; returns its length.
        n = self.payload_len
        if off + n > len(dst):
            raise ValueError("destination too small")
        _copy(dst, off, self.buf, self.payload_off, n)
        return n

    def props(self):
        # The v5 properties as a dict (allocates); {} on 3.1.1.
        c = self._c
        if c.version < 5:
            return {}
        return publish_props(c._pkt, c._rx)
