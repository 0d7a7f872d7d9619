# MQTT over WebSocket for the broker (RFC 6455, subprotocol "mqtt") and the
# dashboard's static files, on a port of its own (config ws_port). Imported
# only when ws_port is set: a broker without it pays nothing.
#
# A WebSocket connection takes an ordinary Conn slot (same limits as TCP); its
# c.sock is a WS object that behaves like a non-blocking socket to the broker:
# readinto() returns the MQTT bytes carried by the client's frames (unmasked
# in place, control frames answered inside), write() sends MQTT bytes as one
# binary frame, close() sends a Close frame first. WS is an io.IOBase so
# select.poll takes it: by the raw socket's fd on the Unix port
# (MP_STREAM_GET_FILENO), by ioctl(MP_STREAM_POLL) on boards.
#
# Memory, per slot: a 14-byte frame header, a 125-byte control payload and a
# 127-byte control frame out. One staging buffer (max_packet + 4) is shared by
# every frame the broker writes, so each frame leaves in one write. The HTTP
# request is parsed line by line through the conn's tx buffer (empty before
# CONNECT), so long browser headers need no extra room.
import io
import select
import time
from micropython import const
from .broker_store import copy

_HS = const(0)    # reading the HTTP request
_OPEN = const(1)  # WebSocket open: MQTT bytes flow
_DONE = const(2)  # Close sent or received, or the page served
_PIN = const(1)
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript", "css": "text/css",
          "svg": "image/svg+xml", "ico": "image/x-icon", "json": "application/json",
          "png": "image/png", "txt": "text/plain"}

FD = True       # poll by fd (Unix port); False exercises the boards' ioctl path
STAGE = None    # shared: one outgoing frame (header + tx bytes)
WSS = None      # one WS per conn slot
LOG = None
ROOT = "www"
HTTP_MS = 2000  # a page response may hold the loop this long at most

try:
    import micropython

    @micropython.viper
    def xor(b: ptr8, n: int, k: ptr8, koff: int, pos: int):
        # Unmask b[0:n] in place with the 4-byte key at k[koff], starting at
        # key byte pos.
        i = 0
        while i < n:
            b[i] = b[i] ^ k[koff + ((pos + i) & 3)]
            i += 1
except (ImportError, AttributeError, SyntaxError, NameError):
    def xor(b, n, k, koff, pos):
        for i in range(n):
            b[i] ^= k[koff + ((pos + i) & 3)]


class WS(io.IOBase):
    def __init__(self, conn, maxf):
        self.raw = None
        self.lb = conn.tx       # HTTP line buffer (tx is empty before CONNECT)
        self.maxf = maxf        # largest data frame taken (max_packet)
        self.h = bytearray(14)  # incoming frame header
        self.ctl = bytearray(125)  # incoming control payload
        self.ob = bytearray(127)   # outgoing control frame, or a data header's tail
        self.pl = None          # poll of raw, for ioctl(MP_STREAM_POLL) on boards
        self.reset(None)

    def reset(self, raw):
        self.raw = raw
        self.st = _HS
        self.hn = 0      # header bytes read
        self.hneed = 2   # header bytes needed
        self.left = 0    # payload bytes of the current frame still to read
        self.op = 0
        self.pos = 0     # payload bytes read (key position; control fill)
        self.mk = 0      # offset of the masking key in h
        self.frag = False  # inside a fragmented data message
        self.wl = 0      # payload bytes of the frame being written still to write
        self.on = 0      # ob bytes to send
        self.oo = 0      # ob bytes sent
        self.pn = -1     # length of a Pong owed (-1: none)
        # HTTP request state (strings, made once per connection).
        self.ln = 0
        self.skip = False
        self.meth = self.path = self.key = self.proto = self.ver = None
        self.upg = False

    # ---- poll support ---------------------------------------------------------

    def ioctl(self, req, arg):
        if req == 10:  # MP_STREAM_GET_FILENO: the Unix port polls the fd itself
            if FD:
                try:
                    return self.raw.fileno()
                except AttributeError:
                    pass
            return -1
        if req == 3:  # MP_STREAM_POLL
            if self.pl is None:
                self.pl = select.poll()
                self.pl.register(self.raw, 5)
            r = 0
            for o, ev in self.pl.ipoll(0):
                r = ev
            return r & (arg | 0x18)
        return 0

    # ---- reading ------------------------------------------------------------

    def readinto(self, buf, room=-1):
        # MQTT bytes into buf[0:]: a count, None when nothing is ready, 0 when
        # the connection is over (EOF, Close, protocol error, page served).
        # buf[0:room] is also the landing place for header and control bytes.
        if room < 0:
            room = len(buf)
        if self.on or self.pn >= 0:
            self._ctl_out()
        if self.st == _HS:
            return self._http(buf, room)
        if self.st != _OPEN:
            return 0
        raw = self.raw
        h = self.h
        while True:
            left = self.left
            if left:
                k = left if left < room else room
                got = raw.readinto(buf, k)
                if not got:
                    return got
                xor(buf, got, h, self.mk, self.pos)
                self.left = left - got
                if self.op < 8:
                    self.pos = (self.pos + got) & 3
                    return got
                copy(self.ctl, self.pos, buf, 0, got)
                self.pos += got
                if not self.left and not self._control():
                    return 0
                continue
            need = self.hneed
            k = need - self.hn
            got = raw.readinto(buf, k if k < room else room)
            if not got:
                return got
            copy(h, self.hn, buf, 0, got)
            self.hn += got
            if self.hn < need:
                continue
            if need == 2:
                if h[0] & 0x70:
                    return self._fail(1002, "reserved bits set")
                if not h[1] & 0x80:
                    return self._fail(1002, "unmasked client frame")
                n = h[1] & 0x7F
                self.hneed = 8 if n == 126 else (14 if n == 127 else 6)
                continue
            if not self._header():
                return 0
            if not self.left and self.op >= 8 and not self._control():
                return 0

    def _header(self):
        # A whole header in h: check it against RFC 6455 and MQTT's rules.
        h = self.h
        n = h[1] & 0x7F
        if n == 126:
            n = h[2] << 8 | h[3]
        elif n == 127:
            if h[2] | h[3] | h[4] | h[5] | h[6]:
                return self._fail(1009, "frame over 16 MB")
            n = h[7] << 16 | h[8] << 8 | h[9]
        op = h[0] & 0x0F
        fin = h[0] & 0x80
        self.mk = self.hneed - 4
        self.hn = 0
        self.hneed = 2
        if op >= 8:
            if op > 10:
                return self._fail(1002, "reserved opcode %d" % op)
            if not fin or n > 125:
                return self._fail(1002, "fragmented or long control frame")
        elif op == 0:
            if not self.frag:
                return self._fail(1002, "continuation outside a message")
        elif op == 2:
            if self.frag:
                return self._fail(1002, "new message inside a fragmented one")
        elif op == 1:
            return self._fail(1003, "text frame (MQTT needs binary)")
        else:
            return self._fail(1002, "reserved opcode %d" % op)
        if op < 8:
            if n > self.maxf:
                return self._fail(1009, "frame of %d bytes over max_packet %d" % (n, self.maxf))
            self.frag = not fin
        self.op = op
        self.left = n
        self.pos = 0
        return True

    def _control(self):
        # A whole control frame in ctl. False when the connection is over.
        op = self.op
        n = self.pos
        self.op = 2 if self.frag else 0
        self.pos = 0
        if op == 9:  # Ping: owe a Pong with the same payload
            self.pn = n
            self._ctl_out()
        elif op == 8:
            if n == 1:
                return self._fail(1002, "close frame of 1 byte")
            self._close_frame(self.ctl[0] << 8 | self.ctl[1] if n >= 2 else 1000)
            return False
        return True  # Pong: nothing to do

    def _fail(self, code, why):
        if LOG:
            LOG.info("websocket close %d: %s" % (code, why))
        self._close_frame(code)
        return 0

    # ---- writing --------------------------------------------------------------

    def _ctl_out(self):
        # Send what ob holds; then a Pong owed, when no data frame is half out.
        if not self.on and self.pn >= 0 and not self.wl:
            n = self.pn
            ob = self.ob
            ob[0] = 0x8A
            ob[1] = n
            copy(ob, 2, self.ctl, 0, n)
            self.on = n + 2
            self.oo = 0
            self.pn = -1
        if self.on:
            try:
                w = self.raw.write(self.ob, self.oo, self.on - self.oo)
            except OSError:
                w = 0
                self.on = self.oo  # the broker sees the error on its own write
            if w:
                self.oo += w
            if self.oo >= self.on:
                self.on = self.oo = 0

    def _close_frame(self, code):
        # Best effort, never mid-frame; the connection is over either way.
        if self.st == _OPEN and not self.wl:
            if self.on and self.oo:
                self._ctl_out()
            if not self.on:
                ob = self.ob
                ob[0] = 0x88
                ob[1] = 2
                ob[2] = code >> 8
                ob[3] = code & 0xFF
                self.on = 4
                self.oo = 0
                self._ctl_out()
        self.st = _DONE

    def write(self, buf, off=0, n=-1):
        # MQTT bytes buf[off:off+n] out; returns how many went (0: try later).
        if n < 0:
            n = len(buf) - off
        if self.st != _OPEN:
            # Closed by a frame error or a Close: the broker is dropping this
            # connection; its last bytes have nowhere to go.
            return n
        if self.on or (self.pn >= 0 and not self.wl):
            self._ctl_out()
            if self.on:
                return 0
        raw = self.raw
        r = self.wl
        if r:  # the rest of a frame already announced
            w = raw.write(buf, off, n if n < r else r)
            if w:
                self.wl = r - w
                return w
            return 0
        st = STAGE
        if n > len(st) - 4:
            n = len(st) - 4
        st[0] = 0x82  # FIN + binary
        if n < 126:
            st[1] = n
            hl = 2
        else:
            st[1] = 126
            st[2] = n >> 8
            st[3] = n & 0xFF
            hl = 4
        copy(st, hl, buf, off, n)
        w = raw.write(st, 0, hl + n)
        if not w:
            return 0
        if w < hl:  # the header's tail goes first next time
            copy(self.ob, 0, st, w, hl - w)
            self.on = hl - w
            self.oo = 0
            self.wl = n
            return 0
        self.wl = n - (w - hl)
        return w - hl

    def close(self):
        if self.raw is None:
            return
        if self.st == _OPEN:
            self._close_frame(1000)
        if self.pl is not None:
            try:
                self.pl.unregister(self.raw)
            except (OSError, KeyError):
                pass
            self.pl = None
        try:
            self.raw.close()
        except OSError:
            pass
        self.reset(None)

    # ---- HTTP: the upgrade, or a page -----------------------------------------

    def _http(self, buf, room):
        # Headers are taken a line at a time into lb; a line longer than lb
        # is skipped (a big Cookie), the ones we need are short.
        got = self.raw.readinto(buf, room)
        if not got:
            return got
        lb = self.lb
        i = 0
        while i < got:
            j = buf.find(b"\n", i, got)
            e = got if j < 0 else j
            if not self.skip:
                if self.ln + e - i > len(lb):
                    self.skip = True
                else:
                    copy(lb, self.ln, buf, i, e - i)
                    self.ln += e - i
            if j < 0:
                return None
            i = j + 1
            if not self.skip:
                r = self._line(bytes(lb[:self.ln]).decode().strip())
                if r is not None:
                    return r
            self.ln = 0
            self.skip = False
        return None

    def _line(self, s):
        if self.meth is None:
            p = s.split(" ")
            if len(p) < 3:
                return self._reply("400 Bad Request")
            self.meth = p[0]
            self.path = p[1]
            return None
        if s:
            k, _, v = s.partition(":")
            k = k.strip().lower()
            v = v.strip()
            if k == "upgrade":
                self.upg = v.lower() == "websocket"
            elif k == "sec-websocket-key":
                self.key = v
            elif k == "sec-websocket-version":
                self.ver = v
            elif k == "sec-websocket-protocol":
                self.proto = v
            return None
        # The blank line: the request is complete.
        if self.meth != "GET":
            return self._reply("405 Method Not Allowed")
        if not self.upg:
            return self._serve()
        if self.ver != "13":
            return self._reply("426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n")
        if not self.key:
            return self._reply("400 Bad Request")
        sp = ""
        if self.proto is not None:
            offered = [x.strip() for x in self.proto.split(",")]
            for x in ("mqtt", "mqttv3.1"):
                if x in offered:
                    sp = "Sec-WebSocket-Protocol: %s\r\n" % x
                    break
            else:
                return self._reply("400 Bad Request", "", "subprotocol mqtt not offered")
        import hashlib
        import binascii
        acc = binascii.b2a_base64(hashlib.sha1(self.key.encode() + _GUID).digest()).strip()
        r = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Accept: %s\r\n%s\r\n" % (acc.decode(), sp)).encode()
        try:
            w = self.raw.write(r)
        except OSError:
            w = 0
        if w != len(r):
            return 0
        self.meth = self.path = self.key = self.proto = self.ver = None
        self.st = _OPEN
        if LOG and LOG.level <= 0:
            LOG.debug("websocket open")
        return None

    def _reply(self, status, extra="", body=""):
        self._blocking_send(("HTTP/1.1 %s\r\n%sContent-Type: text/plain\r\nContent-Length: %d\r\n"
                             "Connection: close\r\n\r\n%s" % (status, extra, len(body), body)).encode())
        if LOG:
            LOG.info("http %s %s: %s" % (self.meth, self.path, status))
        self.st = _DONE
        return 0

    def _serve(self):
        # A static file from ROOT; the connection closes after it.
        path = self.path.split("?")[0]
        if path == "/":
            path = "/index.html"
        if ".." in path or "\\" in path:
            return self._reply("404 Not Found")
        try:
            f = open(ROOT + path, "rb")
        except OSError:
            return self._reply("404 Not Found")
        try:
            size = f.seek(0, 2)
            f.seek(0)
            ext = path[path.rfind(".") + 1:]
            dl = time.ticks_add(time.ticks_ms(), HTTP_MS)
            ok = self._blocking_send(("HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                                      "Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
                                      % (_TYPES.get(ext, "application/octet-stream"), size)).encode(), dl)
            lb = self.lb
            while ok:
                n = f.readinto(lb)
                if not n:
                    break
                ok = self._blocking_send(lb, dl, n)
        finally:
            f.close()
        if LOG:
            LOG.info("http GET %s: %s" % (path, "200 (%d bytes)" % size if ok else "timed out"))
        self.st = _DONE
        return 0

    def _blocking_send(self, b, dl=None, n=-1):
        # Bounded: a page is small, and a reader too slow for it is cut.
        if n < 0:
            n = len(b)
        if dl is None:
            dl = time.ticks_add(time.ticks_ms(), HTTP_MS)
        raw = self.raw
        off = 0
        while off < n:
            try:
                w = raw.write(b, off, n - off)
            except OSError:
                return False
            if w:
                off += w
            elif time.ticks_diff(dl, time.ticks_ms()) <= 0:
                return False
            else:
                time.sleep_ms(5)
        return True


# ---- the broker's side: listen, accept, close --------------------------------

def _root():
    # www/ beside lib/ (firmware/www here, /www on a board), else lib/www.
    import os
    lib = __file__.rsplit("/", 2)[0]
    for r in (lib.rsplit("/", 1)[0] + "/www", lib + "/www"):
        try:
            os.stat(r + "/index.html")
            return r
        except OSError:
            pass
    return "www"


def listen(b, host):
    global STAGE, WSS, LOG, ROOT
    cfg = b.cfg
    LOG = b.log
    ROOT = cfg["http_root"] or _root()
    STAGE = bytearray(b.size + 4)
    WSS = [WS(c, b.size) for c in b.conns]
    port = cfg["ws_port"]
    b.wls = b._listener(host, port)
    b.log.info("websocket and http on %s:%d (root %s)" % (host, port, ROOT))


def _wrap(c, s):
    w = WSS[c.i]
    w.reset(s)
    return w


def accept(b):
    try:
        s, addr = b.wls.accept()
    except OSError:
        return
    s.setblocking(False)
    from .broker import _addr
    if b._take(s, addr, _wrap):
        return
    # Full: a plain HTTP answer, before any upgrade.
    b.log.warn("connection from %s past max_clients %d: 503" % (_addr(addr), len(b.conns)))
    try:
        s.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    except OSError:
        pass
    s.close()


def close(b):
    if b.wls:
        b.p.unregister(b.wls)
        b.wls.close()
        b.wls = None
