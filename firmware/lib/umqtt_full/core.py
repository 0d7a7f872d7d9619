# The client's packet engine: the two buffers, reading whole packets with
# timeouts, handling each incoming packet type, keepalive, and encoding a
# PUBLISH (topic aliases, server limits). client.py puts the API on top.
import time
try:
    import micropython  # the hot paths are @micropython.native / viper
except ImportError:  # CPython: the decorators do nothing
    class micropython:
        native = viper = staticmethod(lambda f: f)
from .errors import (MQTTException, MALFORMED, PROTOCOL_ERROR, PACKET_TOO_LARGE,
                     RECEIVE_MAX_EXCEEDED, TOPIC_ALIAS_INVALID, PID_NOT_FOUND,
                     CONTINUE_AUTH, UNSPECIFIED)
from .codec import (Packet, decode, encode_publish, encode_ack, encode_ping,
                    encode_disconnect, encode_auth, publish_props)
from . import props as P
from .session import Session, WAIT_ACK, WAIT_REC, WAIT_COMP
from .transport import Transport

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_PUBLISH = const(3)
_PUBACK = const(4)
_PUBREC = const(5)
_PUBREL = const(6)
_PUBCOMP = const(7)
_SUBACK = const(9)
_UNSUBACK = const(11)
_PINGRESP = const(13)
_DISCONNECT = const(14)
_AUTH = const(15)
_ETIMEDOUT = const(110)
_ENOTCONN = const(107)

_G = const(64)  # receive read granularity: rx_size // _G views are kept

ticks_ms = time.ticks_ms
ticks_diff = time.ticks_diff


class Core:
    DELAY = 2  # umqtt.robust compatibility (seconds); see backoff_* for the policy
    DEBUG = False

    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0,
                 ssl=None, ssl_params={}, version=4, session_expiry=0, rx_size=1024,
                 tx_size=1024, inflight=8, rx_qos2=32, timeout=5, reconnect=False,
                 backoff_min=0.5, backoff_max=30, reconnect_tries=0, offline_buffer=0,
                 offline_policy=0, topic_alias_out=8, alias_topic_max=64,
                 topic_alias_in=0, connect_props=None, idle=None):
        if port == 0:
            port = 8883 if ssl else 1883
        self.client_id = client_id
        self.sock = None
        self.pid = 0  # umqtt.simple attribute; packet ids come from the session here
        self.server = server
        self.port = port
        self.ssl = ssl
        self.ssl_params = ssl_params
        self.user = user
        self.pswd = password
        self.keepalive = keepalive
        self.version = version
        self.session_expiry = session_expiry
        self.timeout = timeout
        self.lw_topic = None
        self.lw_msg = None
        self.lw_qos = 0
        self.lw_retain = False
        self.lw_props = None
        self.cb = None
        self._cb_mode = 0  # 0 cb(topic, msg), 1 cb(topic, msg, props), 2 cb(Message)
        self.connect_props = connect_props
        self.connack_props = {}
        self.response_info = None
        # The two buffers: every packet in or out goes through these.
        self._rx = bytearray(rx_size)
        self._rxm = memoryview(self._rx)
        # Reads land at multiples of _G, whose views are made here once (a
        # memoryview slice per read would allocate). rx[_rh:_rt] is read and
        # not yet parsed: one read brings in as many packets as are waiting.
        self._rxg = [self._rxm[i:] for i in range(0, rx_size, _G)]
        self._rh = 0
        self._rt = 0
        self._tx = bytearray(tx_size)
        self._txm = memoryview(self._tx)
        self._pkt = Packet()
        self._msg = None  # the zero-copy Message, made by set_callback
        self._t = Transport()
        # idle(ms) runs while a call waits for the server, e.g. Broker.poll
        # when the server is a broker on the same board and event loop.
        self._t.idle = idle
        self._s = Session(inflight, rx_qos2)
        self._ring = None
        if offline_buffer:
            # The buffer first: compiling ring.py from source leaves the heap
            # fragmented, and then a large block may not be found.
            import gc
            gc.collect()
            buf = bytearray(offline_buffer)
            from .ring import Ring
            self._ring = Ring(offline_buffer, offline_policy, buf)
        self.robust = reconnect
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.reconnect_tries = reconnect_tries
        self._tick = 1000  # ms waited per poll: keepalive runs between ticks
        self._ka_ms = 0
        self._last_tx = 0
        self._last_rx = 0
        self._ping_out = False
        self._ping_t = 0
        self._clean = True
        self._user_down = True  # disconnect() called (or never connected)
        self._attempt = 0
        self._next_try = 0
        self._wait_pid = 0  # SUBSCRIBE/UNSUBSCRIBE awaiting its ack
        self._wait_t = 0  # the ack type it needs (SUBACK 9, UNSUBACK 11)
        self._codes = None
        self._done_pid = 0
        self._done_rc = 0
        self._subs = []  # [(filter bytes, options, props)] restored after a lost session
        # Server limits (v5 CONNACK; 3.1.1 keeps these defaults).
        self._srv_rmax = 65535
        self._srv_maxpkt = 0
        self._max_qos = 2
        self._retain_ok = True
        # Outgoing topic aliases: fixed table of topics we gave aliases to.
        self._aout_n = topic_alias_out
        self._aout_len = alias_topic_max
        self._aout = bytearray(topic_alias_out * alias_topic_max)
        self._aout_tl = bytearray(topic_alias_out)  # topic lengths (0 = free)
        self._aout_max = 0  # min(server Topic Alias Maximum, table)
        self._q0 = -1  # QoS 0 fast path: -1 off, else property bytes (0 v3.1.1, 1 v5)
        # Incoming topic aliases (v5, opt-in): alias -> topic the server set.
        self._ain_n = topic_alias_in
        self._ain = bytearray(topic_alias_in * alias_topic_max)
        self._ain_tl = array_h(topic_alias_in)
        # Enhanced authentication (v5).
        self._auth_method = None
        self._auth_data = None
        self._auth_cb = None
        # Request/response helper.
        self._rr_topic = None
        self._rr_corr = None
        self._rr_resp = None
        self._rr_n = 0
        self.dropped = 0  # oversized incoming messages drained (3.1.1)
        self.failed = 0  # pipelined publishes the server refused (v5 reason >= 0x80)
        self.last_reason = 0

    # ---- umqtt.simple API ------------------------------------------------------

    def _close(self):
        self._t.close()
        self.sock = None
        self._rh = self._rt = 0  # what the old link had buffered is void

    def _online(self):
        if self.sock is None:
            raise OSError(_ENOTCONN)

    def _make_room(self):
        # Wait for a free slot in the in-flight window.
        dl = ticks_ms() + int(self.timeout * 1000)
        while self._s.count >= self._window():
            self._pump(dl)

    def _pump(self, dl):
        # One packet (or tick); past the deadline with the flow still open the
        # link counts as dead.
        if ticks_diff(dl, ticks_ms()) <= 0:
            self._close()
            raise OSError(_ETIMEDOUT)
        self._step()

    def _window(self):
        w = self._s.window
        r = self._srv_rmax
        return r if r < w else w

    # ---- packets out ------------------------------------------------------------

    def _send(self, n):
        self._t.write(self._tx, n)
        self._last_tx = ticks_ms()

    def _enc_pub(self, topic, msg, qos, retain, pid, dup, props, alias_ok):
        v = self.version
        alias = 0
        t = topic
        known = False
        if v >= 5 and alias_ok and self._aout_max:
            alias = self._alias_for(topic)
            if alias < 0:  # already sent with this alias: the alias alone
                alias = -alias
                known = True
                t = b""
        n = encode_publish(self._tx, t, msg, qos, retain, dup, pid, v, props, alias)
        if self._srv_maxpkt and n > self._srv_maxpkt:
            if alias and not known:
                self._aout_tl[alias - 1] = 0
            raise MQTTException(PACKET_TOO_LARGE, "over the server's Maximum Packet Size")
        return n

    def _alias_for(self, topic):
        # The alias for topic: -alias when the server knows it already, +alias
        # when newly assigned (send topic and alias), 0 when the table is full
        # or the topic too long to remember. Compares in place, no allocation.
        tn = len(topic)
        L = self._aout_len
        tab = self._aout
        tl = self._aout_tl
        free = 0
        for i in range(self._aout_max):
            k = tl[i]
            if k == tn and tab.find(topic, i * L, i * L + tn) == i * L:
                return -(i + 1)
            if not k and not free:
                free = i + 1
        if free and 0 < tn <= L and tn < 256:
            o = (free - 1) * L
            tab[o:o + tn] = topic
            tl[free - 1] = tn
            return free
        return 0

    def _step(self):
        # Read and handle one packet, or time out a tick; run keepalive.
        t = self._recv(self._tick)
        if t:
            self._handle(t)
        self._keepalive()
        return t

    @micropython.native
    def _recv(self, tmo):
        # Decode the next whole packet in the receive buffer, reading when
        # none is there; returns its type, or 0 when no whole packet arrived
        # within tmo ms (0 = don't wait). A packet still arriving stays
        # buffered for the next call; keepalive notices a link that stalls.
        rx = self._rx
        while True:
            h = self._rh
            t = self._rt
            need = 0
            if t - h >= 2:
                # Remaining length: a variable byte integer of up to four bytes.
                i = h + 1
                rl = 0
                shift = 0
                while i < t:
                    b = rx[i]
                    rl |= (b & 0x7F) << shift
                    i += 1
                    if not b & 0x80:
                        break
                    if i - h > 4:
                        raise self._fail(MALFORMED, "remaining length over 4 bytes")
                    shift += 7
                else:
                    i = 0  # header not complete yet
                if i:
                    if i - h > 2 and rx[i - 1] == 0:
                        raise self._fail(MALFORMED, "non-minimal remaining length")
                    need = i - h + rl
                    if need > len(rx):
                        return self._oversize(i - h, rl)
                    if h + need <= t:
                        self._rh = h + need
                        try:
                            return decode(self._pkt, rx, h, h + need, self.version)
                        except MQTTException as e:
                            raise self._fail(e.args[0], e.args[1] if len(e.args) > 1 else "")
            if not self._t.wait(tmo) or not self._fill(need):
                if self._rt > self._rh and \
                        ticks_diff(ticks_ms(), self._last_rx) > int(self.timeout * 1000):
                    # Part of a packet, then silence: the link is dead.
                    self._close()
                    raise OSError(_ETIMEDOUT)
                return 0

    @micropython.native
    def _q0rx(self):
        # The commonest packet, fused: a whole QoS 0 PUBLISH without
        # properties already in rx, for a cb(topic, msg) callback. q0_find
        # makes the same checks as decode(); anything else goes the general way.
        if self._cb_mode or self._rr_corr is not None:
            return 0
        cb = self.cb
        if cb is None:
            return 0
        h = self._rh
        v5 = self.version >= 5
        r = q0_find(self._rx, h, self._rt, v5)
        if not r:
            return 0
        e = r >> 15
        p = r & 0x7FFF
        self._rh = e
        m = self._rxm
        cb(bytes(m[h + 4:p]), bytes(m[p + v5:e]))
        return 3

    @micropython.native
    def _fill(self, need):
        # One read of whatever is waiting into the free end of rx; need is the
        # size of the packet at _rh when its header is in (else 0). Returns
        # the bytes read.
        rx = self._rx
        n = len(rx)
        h = self._rh
        t = self._rt
        if h == t:
            h = t = 0
        elif t % _G or t == n or h + need > n:
            # Move the partial packet so it ends on a read offset with room
            # after it (a packet within _G of the buffer size goes to 0).
            p = t - h
            r = (p + _G - 1) // _G * _G
            d = r - p
            if d + need > n or r >= n:
                d = 0
            move(rx, d, h, p)
            h = d
            t = d + p
        if t % _G:
            v = self._rxm[t:]  # only for a packet within _G of the buffer size
        else:
            v = self._rxg[t // _G]
        k = self._t.read(v, n - t)
        self._rh = h
        self._rt = t + k
        if k:
            # Bytes in: the link is alive (keepalive) and any ping answered
            # or overtaken; per read, not per packet.
            self._last_rx = ticks_ms()
            self._ping_out = False
        return k

    def _read_all(self, view, n, off):
        # Exactly n bytes into view (rx from off): the body of an oversized
        # packet keeps arriving or the link is dead. A short read continues
        # through a slice (allocates; rare).
        tr = self._t
        got = 0
        dl = ticks_ms() + int(self.timeout * 1000)
        while got < n:
            if tr.wait(50):
                k = tr.read(view if not got else self._rxm[off + got:], n - got)
                if k:
                    got += k
                    continue
            if ticks_diff(dl, ticks_ms()) <= 0:
                raise OSError(_ETIMEDOUT)

    def _oversize(self, hl, rl):
        # Larger than the receive buffer: drain it through the buffer.
        rx = self._rx
        if self.version >= 5:
            raise self._fail(PACKET_TOO_LARGE, "incoming packet over Maximum Packet Size")
        p = self._rt - self._rh
        move(rx, 0, self._rh, p)  # all of it is this packet: it is larger than rx
        self._rh = self._rt = 0
        first = rx[0]
        cap = len(rx)
        self._read_all(self._rxm[p:], cap - p, p)
        pid = 0
        qos = (first >> 1) & 3
        if first >> 4 == _PUBLISH and qos:
            tn = rx[hl] << 8 | rx[hl + 1]
            q = hl + 2 + tn
            if q + 2 <= cap:
                pid = rx[q] << 8 | rx[q + 1]
        left = hl + rl - cap
        while left:
            k = left if left < cap else cap
            self._read_all(self._rxg[0], k, 0)
            left -= k
        self._last_rx = ticks_ms()
        self._ping_out = False
        self.dropped += 1
        if pid:
            self._send(encode_ack(self._tx, _PUBACK if qos == 1 else _PUBREC, pid))
            if qos == 2:
                self._s.rx_add(pid)
        return 0

    def _fail(self, code, why):
        # Malformed or illegal input: tell a v5 server why, drop the link.
        if self.version >= 5 and self.sock is not None:
            try:
                self._send(encode_disconnect(self._tx, code, 5))
            except Exception:
                pass
        self._close()
        return MQTTException(code, why)

    def _handle(self, t):
        pkt = self._pkt
        if t == _PUBLISH:
            self._on_publish(pkt)
        elif t == _PUBACK or t == _PUBCOMP:
            i = self._s.find(pkt.pid)
            want = WAIT_ACK if t == _PUBACK else WAIT_COMP
            if i >= 0 and self._s.state[i] == want:
                self._done(i, pkt.pid, pkt.reason)
        elif t == _PUBREC:
            s = self._s
            i = s.find(pkt.pid)
            if i >= 0 and s.state[i] == WAIT_REC and pkt.reason >= 0x80:
                self._done(i, pkt.pid, pkt.reason)
                return
            rc = 0
            if i >= 0 and s.state[i] >= WAIT_REC:
                s.state[i] = WAIT_COMP
                s.topic[i] = s.msg[i] = s.props[i] = None
            elif self.version >= 5:
                rc = PID_NOT_FOUND
            self._send(encode_ack(self._tx, _PUBREL, pkt.pid, rc, self.version))
        elif t == _PUBREL:
            pid = pkt.pid
            rc = 0 if self._s.rx_del(pid) or self.version < 5 else PID_NOT_FOUND
            self._send(encode_ack(self._tx, _PUBCOMP, pid, rc, self.version))
        elif t == _SUBACK or t == _UNSUBACK:
            if pkt.pid == self._wait_pid:
                if t != self._wait_t:  # an UNSUBACK for our SUBSCRIBE or the reverse
                    raise self._fail(PROTOCOL_ERROR, "ack type %d for packet id %d" % (t, pkt.pid))
                self._codes = pkt.codes
                self._wait_pid = 0
        elif t == _PINGRESP:
            pass
        elif t == _DISCONNECT:
            self._close()
            raise MQTTException(pkt.reason or UNSPECIFIED, "server disconnected")
        elif t == _AUTH:
            self._on_auth()
        else:
            raise self._fail(PROTOCOL_ERROR, "unexpected packet type %d" % t)

    def _done(self, i, pid, rc):
        self._s.free(i)
        self._done_pid = pid
        self._done_rc = rc
        if rc >= 0x80:
            self.failed += 1
            self.last_reason = rc

    def _on_auth(self):
        pkt = self._pkt
        cp = pkt.props or {}
        if pkt.reason != CONTINUE_AUTH or self._auth_cb is None:
            if pkt.reason == 0:
                return  # re-authentication succeeded
            raise self._fail(PROTOCOL_ERROR, "unexpected AUTH")
        data = self._auth_cb(cp.get(P.AUTH_METHOD), cp.get(P.AUTH_DATA))
        self._send(encode_auth(self._tx, CONTINUE_AUTH, {P.AUTH_METHOD: self._auth_method,
                                                         P.AUTH_DATA: data or b""}))

    def _on_publish(self, pkt):
        qos = pkt.qos
        pid = pkt.pid
        s = self._s
        if pkt.payload_off + pkt.payload_len > len(self._rx):
            raise self._fail(MALFORMED, "publish")
        if qos == 2:
            if s.rx_has(pid):
                # A redelivery of a message already delivered: acknowledge only.
                self._send(encode_ack(self._tx, _PUBREC, pid, 0, self.version))
                return
            if not s.rx_add(pid):
                raise self._fail(RECEIVE_MAX_EXCEEDED, "too many QoS 2 messages in flight")
        tbuf = self._rx
        toff = pkt.topic_off
        tlen = pkt.topic_len
        if pkt.alias:
            tbuf, toff, tlen = self._alias_in(pkt)
        self._deliver(pkt, tbuf, toff, tlen)
        if qos == 1:
            self._send(encode_ack(self._tx, _PUBACK, pid, 0, self.version))
        elif qos == 2:
            self._send(encode_ack(self._tx, _PUBREC, pid, 0, self.version))

    def _alias_in(self, pkt):
        a = pkt.alias
        if a > self._ain_n:
            raise self._fail(TOPIC_ALIAS_INVALID, "topic alias over our maximum")
        L = self._aout_len
        o = (a - 1) * L
        n = pkt.topic_len
        if n:
            if n > L:
                raise self._fail(TOPIC_ALIAS_INVALID, "aliased topic too long to keep")
            self._ain[o:o + n] = self._rxm[pkt.topic_off:pkt.topic_off + n]
            self._ain_tl[a - 1] = n
            return self._rx, pkt.topic_off, n
        n = self._ain_tl[a - 1]
        if not n:
            raise self._fail(PROTOCOL_ERROR, "unknown topic alias")
        return self._ain, o, n

    def _deliver(self, pkt, tbuf, toff, tlen):
        if self._rr_corr is not None and tbuf.find(self._rr_topic, toff, toff + tlen) == toff \
                and tlen == len(self._rr_topic):
            p = publish_props(pkt, self._rx)
            if p.get(P.CORRELATION_DATA) == self._rr_corr:
                self._rr_resp = (bytes(self._rxm[pkt.payload_off:pkt.payload_off + pkt.payload_len]), p)
            return
        cb = self.cb
        if cb is None:
            return
        mode = self._cb_mode
        if mode == 2:
            m = self._msg
            m.buf = self._rx
            m.topic_buf = tbuf
            m.topic_off = toff
            m.topic_len = tlen
            m.payload_off = pkt.payload_off
            m.payload_len = pkt.payload_len
            m.qos = pkt.qos
            m.retain = pkt.retain
            m.dup = pkt.dup
            m.pid = pkt.pid
            cb(m)
            return
        topic = bytes(memoryview(tbuf)[toff:toff + tlen])
        msg = bytes(self._rxm[pkt.payload_off:pkt.payload_off + pkt.payload_len])
        if mode == 1:
            cb(topic, msg, publish_props(pkt, self._rx) if self.version >= 5 else {})
        else:
            cb(topic, msg)

    def _keepalive(self):
        ka = self._ka_ms
        if not ka or self.sock is None:
            return
        now = ticks_ms()
        if self._ping_out:
            # Nothing at all from the server since our PINGREQ: the link is dead.
            if ticks_diff(now, self._ping_t) >= (ka >> 1) + 500:
                self._close()
                raise OSError(_ETIMEDOUT)
            return
        half = ka >> 1
        if ticks_diff(now, self._last_tx) >= half or ticks_diff(now, self._last_rx) >= half:
            self._send(encode_ping(self._tx))
            self._ping_out = True
            self._ping_t = now


try:
    @micropython.viper
    def move(buf: ptr8, dst: int, src: int, n: int):
        # memmove inside one buffer, either direction, without allocating.
        if dst < src:
            i = 0
            while i < n:
                buf[dst + i] = buf[src + i]
                i += 1
        elif dst > src:
            i = n - 1
            while i >= 0:
                buf[dst + i] = buf[src + i]
                i -= 1
    @micropython.viper
    def q0_pack(tx: ptr8, first: int, topic: ptr8, tn: int, pv: int, msg: ptr8, mn: int) -> int:
        # A whole QoS 0 PUBLISH (no properties) into tx in one call; the
        # caller has checked it fits and is under 16384 bytes. Returns its size.
        rl = 2 + tn + pv + mn
        tx[0] = first
        if rl < 128:
            tx[1] = rl
            o = 2
        else:
            tx[1] = (rl & 0x7F) | 0x80
            tx[2] = rl >> 7
            o = 3
        tx[o] = tn >> 8
        tx[o + 1] = tn & 0xFF
        o += 2
        i = 0
        while i < tn:
            tx[o + i] = topic[i]
            i += 1
        o += tn
        if pv:
            tx[o] = 0
            o += 1
        i = 0
        while i < mn:
            tx[o + i] = msg[i]
            i += 1
        return o + mn

    @micropython.viper
    def q0_find(rx: ptr8, h: int, t: int, v5: int) -> int:
        # A whole QoS 0 PUBLISH (retain either way, v5 without properties) at
        # rx[h:t] with an ASCII topic free of wildcards and NUL: returns
        # end << 15 | end of topic, else 0 (the general decoder decides).
        if t - h < 5 or (rx[h] & 0xFE) != 0x30 or rx[h + 1] > 127:
            return 0
        e = h + 2 + rx[h + 1]
        if e > t or e >= 0x8000:
            return 0
        tn = (rx[h + 2] << 8) | rx[h + 3]
        p = h + 4 + tn
        if not tn or p > e:
            return 0
        if v5:
            if p >= e or rx[p]:
                return 0
        i = h + 4
        while i < p:
            c = rx[i]
            if c == 0x2B or c == 0x23 or c == 0 or c > 0x7F:
                return 0
            i += 1
        return (e << 15) | p
except (ImportError, AttributeError, SyntaxError, NameError):
    def move(buf, dst, src, n):
        if dst != src:
            buf[dst:dst + n] = bytes(buf[src:src + n])

    def q0_find(rx, h, t, v5):
        return 0  # no viper: every packet takes the general way

    def q0_pack(tx, first, topic, tn, pv, msg, mn):
        rl = 2 + tn + pv + mn
        h = bytes([first, rl]) if rl < 128 else bytes([first, (rl & 0x7F) | 0x80, rl >> 7])
        b = h + bytes([tn >> 8, tn & 0xFF]) + bytes(topic) + (b"\0" if pv else b"") + bytes(msg)
        tx[:len(b)] = b
        return len(b)


def array_h(n):
    from array import array
    return array("H", bytes(2 * n))
