# MQTT over WebSocket for the client (RFC 6455, subprotocol "mqtt"), for
# brokers reachable only through HTTP ports. Transport.open uses it when the
# server is "ws://host[:port][/path]" (or "wss://..." over TLS):
#     MQTTClient("id", "ws://broker.local:8080/mqtt")
# WSClient wraps the TCP (or TLS) socket and looks like one to the transport:
# readinto() returns the MQTT bytes of the server's frames (Ping answered,
# Close ends the stream), write() sends MQTT bytes as one masked binary frame
# in one write, through a staging buffer sized to the client's tx buffer on
# first use. It is an io.IOBase, so select.poll and asyncio take it.
import io
import select
from random import getrandbits
from .errors import MQTTException, PROTOCOL_ERROR, UNSPECIFIED

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

try:
    import micropython

    @micropython.viper
    def mxor(d: ptr8, doff: int, s: ptr8, soff: int, n: int, k: ptr8, koff: int):
        # d[doff:doff+n] = s[soff:soff+n] masked with the 4-byte key at k[koff].
        i = 0
        while i < n:
            d[doff + i] = s[soff + i] ^ k[koff + (i & 3)]
            i += 1
except (ImportError, AttributeError, SyntaxError, NameError):
    def mxor(d, doff, s, soff, n, k, koff):
        for i in range(n):
            d[doff + i] = s[soff + i] ^ k[koff + (i & 3)]


def parse(url, ssl=None):
    # "ws[s]://host[:port][/path]" -> (ssl, host, port, path)
    tls = url[:6] == "wss://"
    hp, _, path = url[6 if tls else 5:].partition("/")
    port = 443 if tls else 80
    if hp[-1:] != "]" and ":" in hp:
        hp, _, p = hp.rpartition(":")
        port = int(p)
    return (ssl or True) if tls else ssl, hp.strip("[]"), port, "/" + path


class WSClient(io.IOBase):
    def __init__(self, s, host, port, path):
        # s: connected, still blocking with the connect timeout.
        self.s = s
        self.h = bytearray(14)  # incoming frame header
        self.hv = [memoryview(self.h)[i:] for i in range(14)]
        self.hn = 0
        self.hneed = 2
        self.left = 0   # payload bytes of the current frame still to read
        self.op = 0
        self.st = None  # staging: one outgoing frame
        self.so = self.se = self.shl = 0  # staged bytes sent / total / header length
        self.pl = None
        self.done = False
        self._upgrade(host, port, path)

    def _upgrade(self, host, port, path):
        import binascii
        import hashlib
        key = binascii.b2a_base64(bytes(getrandbits(8) for _ in range(16))).strip()
        req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
               % (path, host, port, key.decode())).encode()
        self._all(req)
        # The response, a byte at a time: nothing past its end may be taken.
        r = bytearray()
        one = bytearray(1)
        while r[-4:] != b"\r\n\r\n":
            if len(r) > 2048 or not self.s.readinto(one, 1):
                raise MQTTException(UNSPECIFIED, "websocket: no HTTP answer")
            r += one
        lines = bytes(r).decode().split("\r\n")
        if lines[0][9:12] != "101":
            raise MQTTException(UNSPECIFIED, "websocket upgrade refused: " + lines[0])
        want = binascii.b2a_base64(hashlib.sha1(key + _GUID).digest()).strip().decode()
        acc = None
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            if k.strip().lower() == "sec-websocket-accept":
                acc = v.strip()
        if acc != want:
            raise MQTTException(UNSPECIFIED, "websocket: bad Sec-WebSocket-Accept")

    def _all(self, b):
        n = 0
        while n < len(b):
            w = self.s.write(b, n, len(b) - n)
            if w:
                n += w

    # ---- socket look-alike ------------------------------------------------------

    def setblocking(self, flag):
        self.s.setblocking(flag)

    def settimeout(self, t):
        self.s.settimeout(t)

    def ioctl(self, req, arg):
        if req == 10:  # MP_STREAM_GET_FILENO: a plain socket polls by fd (Unix)
            try:
                return self.s.fileno()
            except AttributeError:
                return -1  # TLS: poll it, it knows its decrypted bytes
        if req == 3:  # MP_STREAM_POLL
            if self.pl is None:
                self.pl = select.poll()
                self.pl.register(self.s, 5)
            r = 0
            for o, ev in self.pl.ipoll(0):
                r = ev
            return r & (arg | 0x18)
        return 0

    def readinto(self, view, n=-1):
        # MQTT bytes into view[0:]: a count, None when none are ready, 0 at
        # the end (EOF or the server's Close).
        if n < 0:
            n = len(view)
        s = self.s
        h = self.h
        while not self.done:
            left = self.left
            if left and self.op < 8:
                got = s.readinto(view, n if n < left else left)
                if got:
                    self.left = left - got
                return got
            if left:  # a control frame's payload: rare, may allocate
                c = s.read(left)
                if c is None:
                    return None
                if not c:
                    return 0
                self.ctl += c
                self.left = left - len(c)
                if self.left:
                    continue
                self._control()
                continue
            got = s.readinto(self.hv[self.hn], self.hneed - self.hn)
            if not got:
                return got
            self.hn += got
            if self.hn < self.hneed:
                continue
            if self.hneed == 2:
                if h[1] & 0x80 or h[0] & 0x70:
                    raise MQTTException(PROTOCOL_ERROR, "websocket: masked frame or reserved bits from server")
                k = h[1] & 0x7F
                self.hneed = 4 if k == 126 else (10 if k == 127 else 2)
                if self.hneed > 2:
                    continue
            k = h[1] & 0x7F
            if k == 126:
                k = h[2] << 8 | h[3]
            elif k == 127:
                k = h[7] << 16 | h[8] << 8 | h[9]
            op = h[0] & 0x0F
            self.hn = 0
            self.hneed = 2
            if op == 1 or (op > 2 and op < 8) or op > 10:
                raise MQTTException(PROTOCOL_ERROR, "websocket: opcode %d from server" % op)
            self.op = op
            self.left = k
            if op >= 8:
                self.ctl = b""
                if not k:
                    self._control()
        return 0

    def _control(self):
        op = self.op
        self.op = 0
        if op == 9:  # Ping: Pong with its payload
            self._frame(0x8A, self.ctl)
        elif op == 8:  # Close: answer it; the stream ends
            self._frame(0x88, self.ctl[:2])
            self.done = True

    def _frame(self, b0, payload):
        # A small control frame, best effort, never inside a data frame.
        if self.so < self.se:
            return
        k = bytes(getrandbits(8) for _ in range(4))
        f = bytearray(6 + len(payload))
        f[0] = b0
        f[1] = 0x80 | len(payload)
        f[2:6] = k
        mxor(f, 6, payload, 0, len(payload), k, 0)
        try:
            self.s.write(f)
        except OSError:
            pass

    def write(self, buf, a=-1, b=-1):
        # write(buf, n) or write(buf, off, n): MQTT bytes out; returns how
        # many went (the rest of a frame already begun goes first).
        if b < 0:
            off, n = 0, (len(buf) if a < 0 else a)
        else:
            off, n = a, b
        if self.done:
            raise OSError(32)
        if self.so >= self.se:  # a new frame
            st = self.st
            if st is None or len(st) < n + 8:
                st = self.st = bytearray(max(n, len(buf)) + 8)
            st[0] = 0x82
            if n < 126:
                st[1] = 0x80 | n
                hl = 6
            else:
                st[1] = 0x80 | 126
                st[2] = n >> 8
                st[3] = n & 0xFF
                hl = 8
            for i in range(hl - 4, hl):
                st[i] = getrandbits(8)
            mxor(st, hl, buf, off, n, st, hl - 4)
            self.so = 0
            self.se = hl + n
            self.shl = hl
        was = self.so - self.shl
        w = self.s.write(self.st, self.so, self.se - self.so)
        if w:
            self.so += w
        now = self.so - self.shl
        if was < 0:
            was = 0
        return now - was if now > was else 0

    def close(self):
        if not self.done:
            self.done = True
            self._frame(0x88, b"\x03\xe8")
        if self.pl is not None:
            try:
                self.pl.unregister(self.s)
            except (OSError, KeyError):
                pass
            self.pl = None
        self.s.close()
