# The broker's sending side: encoding PUBLISH and acks into a connection's
# tx buffer (properties filtered in place, topic aliases, subscription ids),
# the in-flight/queue pump within the client's Receive Maximum, and
# non-blocking flushes. A mixin of Broker; no allocation on these paths.
import time
from micropython import const
from . import codec
from . import props as P
from .wire import varint_size, put_varint
from .broker_store import copy, same
from .broker_conn import ONLINE, PENDING

_PIN = const(1)
_POUT = const(4)
_NSID = const(4)     # subscription ids kept per session per message

# Property value sizes by id, for skipping: n bytes, 0xFF varint, 0xFE string
# or binary, 0xFD string pair.
_PSIZE = bytearray(43)
for _k in P.SPEC:
    _PSIZE[_k] = (0, 1, 2, 4, 0xFF, 0xFE, 0xFE, 0xFD)[P.SPEC[_k][0]]
del _k

def _skip_prop(b, off):
    # Offset after the property at off (ids already validated by the codec).
    t = _PSIZE[b[off]]
    off += 1
    if t < 0xF0:
        return off + t
    if t == 0xFF:
        while b[off] & 0x80:
            off += 1
        return off + 1
    off += 2 + (b[off] << 8 | b[off + 1])
    if t == 0xFD:
        off += 2 + (b[off] << 8 | b[off + 1])
    return off


def _pass_len(b, off, end):
    # Bytes of the properties a subscriber gets: all but Topic Alias,
    # Subscription Identifier and Message Expiry (the broker rewrites those).
    n = 0
    while off < end:
        nxt = _skip_prop(b, off)
        pid = b[off]
        if pid != 0x23 and pid != 0x0B and pid != 0x02:
            n += nxt - off
        off = nxt
    return n


def _pass_copy(dst, d, b, off, end):
    while off < end:
        nxt = _skip_prop(b, off)
        pid = b[off]
        if pid != 0x23 and pid != 0x0B and pid != 0x02:
            copy(dst, d, b, off, nxt - off)
            d += nxt - off
        off = nxt
    return d




class Out:
    def _pump(self, s):
        c = s.conn
        if c is not None and c.state == ONLINE:
            self._fill(s)
            self._flush(c)

    def _fill(self, s):
        # Move what waits into tx while there is room: in-flight (re)sends
        # first, then the queue, within the client's Receive Maximum. Only
        # encodes; the caller flushes (so this never runs nested in itself).
        c = s.conn
        if c is None or c.state != ONLINE:
            return
        pool = self.pool
        if s.f_n:
            for k in range(s.nf):
                st = s.f_state[k]
                if st == 5:
                    r = self._send_slot(c, s, s.f_slot[k], s.f_qos[k], s.f_pid[k],
                                        s.f_flags[k], s.f_sid, k * _NSID)
                    if not r:
                        return
                    if r == 1:
                        s.f_state[k] = 1
                    else:
                        self._free_flight(s, k)
                elif st == 6:
                    if not self._put_ack(c, codec.PUBREL, s.f_pid[k], 0, False):
                        return
                    s.f_state[k] = 2
        while s.q_n:
            h = s.q_head
            i = s.q_slot[h]
            q = s.q_qos[h]
            if q == 0:
                r = self._send_slot(c, s, i, 0, 0, s.q_flags[h], s.q_sid, h * _NSID)
                if not r:
                    return
                pool.release(i)
            else:
                if s.f_n >= s.send_max:
                    return
                k = 0
                while s.f_state[k]:
                    k += 1
                s.f_slot[k] = i  # the queue's reference moves to the flight entry
                s.f_qos[k] = q
                s.f_flags[k] = s.q_flags[h]
                fs = s.f_sid
                qs = s.q_sid
                for j in range(_NSID):
                    fs[k * _NSID + j] = qs[h * _NSID + j]
                s.f_pid[k] = self._pid(s)
                s.f_state[k] = 5
                s.f_n += 1
                r = self._send_slot(c, s, i, q, s.f_pid[k], s.q_flags[h], fs, k * _NSID)
                if r == 1:
                    s.f_state[k] = 1
                elif r:
                    self._free_flight(s, k)
            s.q_head = (h + 1) % s.depth
            s.q_n -= 1
            if not r:
                return

    def _free_flight(self, s, k):
        self.pool.release(s.f_slot[k])
        s.f_slot[k] = -1
        s.f_state[k] = 0
        s.f_n -= 1

    def _pid(self, s):
        while True:
            p = s.next_pid + 1
            if p > 65535:
                p = 1
            s.next_pid = p
            free = True
            for k in range(s.nf):
                if s.f_state[k] and s.f_pid[k] == p:
                    free = False
                    break
            if free:
                return p

    def _send_slot(self, c, s, i, q, pid, flags, ids, base):
        # A stored message to s; its subscription ids are ids[base:base+_NSID],
        # put where _put_pub takes a routed message's ids from (h_sid).
        pool = self.pool
        exp = pool.exp[i]
        if exp >= 0:
            exp -= self.secs
            if exp <= 0:
                return 3
        o = s.idx
        hs = self.h_sid
        n = 0
        for j in range(_NSID):
            v = ids[base + j]
            if v:
                hs[o * _NSID + n] = v
                n += 1
        self.h_nsid[o] = n
        b = pool.bufs[i]
        tn = pool.tn[i]
        pn = pool.pn[i]
        return self._put_pub(c, o, b, 0, tn, b, tn, tn + pn, False,
                             b, tn + pn, pool.ln[i], exp, q, pid, flags & 1,
                             -1, flags & 2)

    def _on_ack(self, c, t, pkt):
        s = self.sess[c.sess]
        s.last_ack = time.ticks_ms()
        pid = pkt.pid
        for k in range(s.nf):
            st = s.f_state[k]
            if st and s.f_pid[k] == pid:
                if t == codec.PUBACK and st == 1 and s.f_qos[k] == 1:
                    self._free_flight(s, k)
                elif t == codec.PUBREC and st == 1 and s.f_qos[k] == 2:
                    if pkt.reason >= 0x80:
                        self._free_flight(s, k)
                    else:
                        s.f_state[k] = 2
                        if self.store:
                            # persist_interval 0: "PUBREC came" on file before
                            # the PUBREL, so a restart resends the PUBREL, never
                            # the PUBLISH (the receiver may have released the id).
                            self.store.sync()
                        if not self._put_ack(c, codec.PUBREL, pid, 0):
                            s.f_state[k] = 6
                elif t == codec.PUBCOMP and st == 2:
                    self._free_flight(s, k)
                break
        else:
            if t == codec.PUBREC:
                self._put_ack(c, codec.PUBREL, pid, 0x92)
        self._pump(s)
        self._flush(c)

    # ---- encoding out -------------------------------------------------------------

    def _put_ack(self, c, t, pid, reason, flush=True):
        if len(c.tx) - c.txt < 6:
            self._compact(c)
            if len(c.tx) - c.txt < 6:
                return False
        tx = c.tx
        o = c.txt
        tx[o] = (t << 4) | (2 if t == codec.PUBREL else 0)
        tx[o + 2] = pid >> 8
        tx[o + 3] = pid & 0xFF
        if reason and c.version == 5:
            tx[o + 1] = 3
            tx[o + 4] = reason
            c.txt = o + 5
        else:
            tx[o + 1] = 2
            c.txt = o + 4
        if flush:
            self._flush(c)
        return True

    def _compact(self, c):
        h = c.txh
        if h:
            n = c.txt - h
            if n:
                copy(c.tx, 0, c.tx, h, n)
            c.txh = 0
            c.txt = n

    def _put_pub(self, c, o, tb, to, tn, pb, po, pe, filt, yb, yo, yn, exp, q, pid, retain, sid,
                 dup=0):
        # Encode one PUBLISH into c's tx. Returns 1 written, 0 no room now,
        # 2 over the client's Maximum Packet Size (dropped, as 3.3.4 says).
        v5 = c.version == 5
        alias = 0
        stn = tn
        plen = 0
        if v5:
            plen = _pass_len(pb, po, pe) if filt else pe - po
            if exp >= 0:
                plen += 5
            if sid < 0:
                for k in range(self.h_nsid[o]):
                    plen += 1 + varint_size(self.h_sid[o * _NSID + k])
            elif sid:
                plen += 1 + varint_size(sid)
            if c.ao_max:
                w = self.width
                for k in range(c.ao_n):
                    if c.ao_len[k] == tn and same(c.ao, k * w, tb, to, tn):
                        alias = k + 1
                        stn = 0
                        break
                if not alias and c.ao_n < c.ao_max and tn <= w:
                    alias = -(c.ao_n + 1)  # assigned once the packet fits
                if alias:
                    plen += 3
        rl = 2 + stn + yn
        if q:
            rl += 2
        if v5:
            rl += varint_size(plen) + plen
        size = 1 + varint_size(rl) + rl
        if size > c.out_max:
            self.dropped += 1
            return 2
        tx = c.tx
        # The whole tx may take a PUBLISH: acks to this client wait in its rx
        # (see _process) until tx has room again.
        if len(tx) - c.txt < size:
            self._send_now(c)
            self._compact(c)
            if len(tx) - c.txt < size:
                return 0
        if alias < 0:
            alias = -alias
            copy(c.ao, (alias - 1) * self.width, tb, to, tn)
            c.ao_len[alias - 1] = tn
            c.ao_n = alias
        d = c.txt
        tx[d] = 0x30 | (8 if dup else 0) | (q << 1) | (1 if retain else 0)
        d = put_varint(tx, d + 1, rl)
        tx[d] = stn >> 8
        tx[d + 1] = stn & 0xFF
        d += 2
        if stn:
            copy(tx, d, tb, to, stn)
            d += stn
        if q:
            tx[d] = pid >> 8
            tx[d + 1] = pid & 0xFF
            d += 2
        if v5:
            d = put_varint(tx, d, plen)
            if filt:
                d = _pass_copy(tx, d, pb, po, pe)
            else:
                copy(tx, d, pb, po, pe - po)
                d += pe - po
            if exp >= 0:
                tx[d] = 0x02
                tx[d + 1] = (exp >> 24) & 0xFF
                tx[d + 2] = (exp >> 16) & 0xFF
                tx[d + 3] = (exp >> 8) & 0xFF
                tx[d + 4] = exp & 0xFF
                d += 5
            if sid < 0:
                for k in range(self.h_nsid[o]):
                    tx[d] = 0x0B
                    d = put_varint(tx, d + 1, self.h_sid[o * _NSID + k])
            elif sid:
                tx[d] = 0x0B
                d = put_varint(tx, d + 1, sid)
            if alias:
                tx[d] = 0x23
                tx[d + 1] = alias >> 8
                tx[d + 2] = alias & 0xFF
                d += 3
        copy(tx, d, yb, yo, yn)
        c.txt = d + yn
        self.sent += 1
        return 1

    def _send_now(self, c):
        # Write what tx holds, no more: safe anywhere (no refill, no drop).
        n = c.txt - c.txh
        if n > 0 and c.sock is not None:
            try:
                w = c.sock.write(c.tx, c.txh, n)
            except OSError:
                w = 0  # reported by the next flush or read
            if w:
                c.txh += w
                if c.txh == c.txt:
                    c.txh = c.txt = 0

    def _flush(self, c):
        while True:
            n = c.txt - c.txh
            if n > 0 and c.sock is not None:
                try:
                    w = c.sock.write(c.tx, c.txh, n)
                except OSError:
                    w = 0
                    if c.state == ONLINE or c.state == PENDING:
                        self._drop(c, None, True, "write error")
                    return
                if w:
                    c.txh += w
                    if c.txh == c.txt:
                        c.txh = c.txt = 0
            if c.state != ONLINE or c.txt or self.filling:
                break
            # All sent: refill from the session's waiting messages.
            s = self.sess[c.sess]
            if not s.q_n and not s.f_n:
                break
            self.filling = True
            self._fill(s)
            self.filling = False
            if not c.txt:
                break
        # A stalled reader is resumed by poll(), never from here: a flush can
        # run inside a route, and processing its packets would nest another.
        self._mask(c)

    def _mask(self, c):
        if c.state != ONLINE and c.state != PENDING:
            return
        m = 0 if c.stalled or c.rxn >= len(c.rx) else _PIN
        if c.txt > c.txh:
            m |= _POUT
        if m != c.mask:
            c.mask = m
            self.p.modify(c.sock, m)
