# The broker's protocol side: reading and framing packets from a
# connection's rx buffer, CONNECT (auth, sessions, takeover), SUBSCRIBE and
# UNSUBSCRIBE. A mixin of Broker (broker.py), split out so each module
# compiles within a small heap.
import time
from micropython import const
from . import codec
from . import props as P
from .errors import MQTTException
from .wire import varint_size
from .topic import match
from .broker_store import copy
from .broker_conn import PENDING, ONLINE
from . import broker_config as CFG

_RESERVE = const(48)  # tx bytes kept free of PUBLISH for acks and pings
_NO_LOCAL = const(0x04)
_NEVER = 0xFFFFFFFF  # session expiry "never"

CFG_V4 = {0x84: 0x01, 0x85: 0x02, 0x88: 0x03, 0x89: 0x03, 0x97: 0x03, 0x86: 0x04, 0x87: 0x05,
          0x8C: 0x05, 0x8A: 0x05}


class Proto:
    # ---- reading -------------------------------------------------------------

    def _read(self, c):
        rx = c.rx
        room = len(rx) - c.rxn
        if room <= 0:
            self._process(c)
            return
        try:
            if c.rxn:
                # readinto writes at the start of a buffer; take the bytes in the
                # shared scratch and copy them after the partial packet.
                n = c.sock.readinto(self.scratch, room)
                if n:
                    copy(rx, c.rxn, self.scratch, 0, n)
            else:
                n = c.sock.readinto(rx, room)
        except OSError as e:
            self._drop(c, None, True, "read error %s" % e)
            return
        if n is None:
            return
        if not n:
            self._drop(c, None, True, "connection closed")
            return
        c.rxn += n
        c.last = time.ticks_ms()
        self._process(c)

    def _process(self, c):
        # Handle the whole packets in rx; keep a partial one. Stop while the
        # tx buffer cannot take an answer (the client is not reading).
        rx = c.rx
        off = 0
        c.stalled = False
        while c.state == ONLINE or c.state == PENDING:
            end = c.rxn
            if c.state == PENDING and end > off and rx[off] != 0x10 and \
                    (rx[off] != 0xF0 or c.auth_cn is None):
                # Not a CONNECT: refuse now rather than wait for a length that
                # garbage happened to announce.
                self._drop(c, None, False, "first packet is not CONNECT (0x%02x)" % rx[off])
                return
            try:
                rl = codec.remaining_length(rx, off, end)
            except MQTTException:
                self._drop(c, 0x81, True, "malformed remaining length")
                return
            if rl < 0:
                break
            size = 1 + varint_size(rl) + rl
            if size > len(rx):
                # Refused from the fixed header, before its bytes arrive.
                self._drop(c, 0x95, True, "packet of %d bytes over max_packet %d" % (size, len(rx)))
                return
            if off + size > end:
                break
            if c.state == ONLINE and len(c.tx) - c.txt + c.txh < _RESERVE:
                self._compact(c)
                if len(c.tx) - c.txt < _RESERVE:
                    if self.log.level <= 0:
                        self.log.debug("%s: tx full, its packets wait" % self._cid(c))
                    c.stalled = True
                    break
            try:
                self._packet(c, off, off + size)
            except Exception as e:  # a broker bug or MemoryError: lose this client, not the broker
                self.log.error("%s: internal error handling packet 0x%02x: %r" % (self._cid(c), rx[off], e))
                self._drop(c, 0x83, True)
                return
            off += size
        if c.state != ONLINE and c.state != PENDING:
            return
        if off:
            n = c.rxn - off
            if n:
                copy(rx, 0, rx, off, n)
            c.rxn = n
        self._mask(c)

    def _packet(self, c, off, end):
        pkt = self.pkt  # one decode target for all: a packet is handled before the next
        try:
            t = codec.decode(pkt, c.rx, off, end, c.version)
        except MQTTException as e:
            if c.state == PENDING:
                # Answer in the client's version when its CONNECT got that far.
                i = off + 1
                while i < end and c.rx[i] & 0x80:
                    i += 1
                if i + 7 < end and c.rx[i + 7] == 5:
                    c.version = 5
                self._connack_refuse(c, e.code, "bad CONNECT (0x%02x) %s" % (e.code, e))
            else:
                self._drop(c, e.code, True, "protocol error 0x%02x: %s" % (e.code, e))
            return
        if c.state == PENDING:
            if t == codec.AUTH and c.auth_cn is not None:
                pr = pkt.props or {}
                if pkt.reason != 0x18 or pr.get(P.AUTH_METHOD) != c.auth_m:
                    self._connack_refuse(c, 0x82, "AUTH out of step during CONNECT")
                    return
                cn = c.auth_cn
                c.auth_n += 1
                if self._auth_step(c, cn, pr.get(P.AUTH_DATA), c.auth_n):
                    self._connect(c, cn, True)
                return
            if t != codec.CONNECT:
                self._drop(c, None, True, "first packet type %d, not CONNECT" % t)
                return
            self._connect(c, pkt.connect)
            return
        if t == codec.PUBLISH:
            self._on_publish(c, pkt)
        elif t == codec.PUBACK or t == codec.PUBREC or t == codec.PUBCOMP:
            self._on_ack(c, t, pkt)
        elif t == codec.PUBREL:
            s = self.sess[c.sess]
            found = s.rx_del(pkt.pid)
            if found and self.store:
                self.store.sync()  # persist_interval 0: before the PUBCOMP
            self._put_ack(c, codec.PUBCOMP, pkt.pid, 0 if found else 0x92)
        elif t == codec.PINGREQ:
            c.tx[c.txt] = 0xD0
            c.tx[c.txt + 1] = 0
            c.txt += 2
            self._flush(c)
        elif t == codec.SUBSCRIBE:
            self._subscribe(c, pkt)
        elif t == codec.UNSUBSCRIBE:
            self._unsubscribe(c, pkt)
        elif t == codec.AUTH:
            self._reauth(c, pkt)
        elif t == codec.DISCONNECT:
            s = self.sess[c.sess]
            if c.version == 5 and pkt.props and P.SESSION_EXPIRY in pkt.props:
                e = pkt.props[P.SESSION_EXPIRY]
                if e and not s.expiry:
                    self._drop(c, 0x82, True, "session expiry set at DISCONNECT after 0")
                    return
                s.expiry = min(e, self.cfg["session_expiry_max"]) if e != _NEVER else e
                s.persist = e > 0
            self._drop(c, None, pkt.reason == 0x04, "disconnected (0x%02x)" % pkt.reason)
        elif t == codec.CONNECT:
            self._drop(c, 0x82, True, "second CONNECT")
        else:
            self._drop(c, 0x82, True, "unexpected packet type %d" % t)

    # ---- CONNECT ---------------------------------------------------------------

    def _connack_refuse(self, c, code, why):
        c.version = c.version or 4
        if c.version == 5:
            c.txt = codec.encode_connack(c.tx, False, code, 5)
        elif code in CFG_V4:
            c.txt = codec.encode_connack(c.tx, False, CFG_V4[code], 4)
        # else 3.1.1 malformed CONNECT: closed without a CONNACK
        self._flush(c)
        self.log.warn("refused %s: %s" % (c.addr, why))
        c.state = ONLINE  # so _drop does not add a DISCONNECT
        c.version = 4
        self._drop(c, None, False)

    def _auth_step(self, c, cn, data, step):
        # One step of enhanced authentication (4.12): True when the program's
        # auth() accepts; else an AUTH to continue went out, or a refusal.
        try:
            rc, out = self.auth(cn.client_id, c.auth_m, data, step)
        except Exception as e:
            self.log.error("auth(%r) failed: %r" % (c.auth_m, e))
            rc, out = 0x87, None
        if rc == 0:
            c.auth_cn = None
            c.auth_d = out
            return True
        if rc == 0x18:
            c.auth_cn = cn
            pr = {P.AUTH_METHOD: c.auth_m}
            if out:
                pr[P.AUTH_DATA] = out
            c.txt = codec.encode_auth(c.tx, 0x18, pr)
            self._flush(c)
            return False
        c.auth_cn = None
        self._connack_refuse(c, rc if rc >= 0x80 else 0x87, "authentication (%s) refused" % c.auth_m)
        return False

    def _reauth(self, c, pkt):
        # Re-authentication of a connected client (AUTH 0x19, then 0x18 steps).
        pr = pkt.props or {}
        m = pr.get(P.AUTH_METHOD)
        if c.auth_m is None or m != c.auth_m or (pkt.reason != 0x19 and not c.auth_n):
            self._drop(c, 0x82, True, "AUTH without the connection's method")
            return
        c.auth_n = 1 if pkt.reason == 0x19 else c.auth_n + 1  # steps from 1: 0 = none running
        try:
            rc, out = self.auth(self.sess[c.sess].cid, m, pr.get(P.AUTH_DATA), c.auth_n - 1)
        except Exception as e:
            self.log.error("auth(%r) failed: %r" % (m, e))
            rc, out = 0x87, None
        if rc != 0 and rc != 0x18:
            self._drop(c, rc if rc >= 0x80 else 0x87, True, "re-authentication refused")
            return
        if rc == 0:
            c.auth_n = 0
        p = {P.AUTH_METHOD: m}
        if out:
            p[P.AUTH_DATA] = out
        try:
            c.txt += codec.encode_auth(memoryview(c.tx)[c.txt:], rc, p)
        except MQTTException:
            self._drop(c, 0x97, True, "no room for AUTH")
            return
        self._flush(c)

    def _connect(self, c, cn, authed=False):
        v = cn.version
        c.version = v
        cfg = self.cfg
        pr = cn.props or {}
        users = cfg["users"]
        if cn.user is None:
            if not cfg["allow_anonymous"]:
                self._connack_refuse(c, 0x87, "anonymous connection not allowed")
                return
        elif users or not cfg["allow_anonymous"]:
            pw = users.get(cn.user)
            if pw is None or cn.password != pw.encode():
                self._connack_refuse(c, 0x86, "bad user name or password for %r" % cn.user)
                return
        if P.AUTH_METHOD in pr and not authed:
            if self.auth is None:
                self._connack_refuse(c, 0x8C, "authentication method not supported")
                return
            c.auth_m = pr[P.AUTH_METHOD]
            if not self._auth_step(c, cn, pr.get(P.AUTH_DATA), 0):
                return
        cid = cn.client_id
        assigned = False
        if not cid:
            if v < 5 and not cn.clean:
                self._connack_refuse(c, 0x85, "empty client id with clean session 0")
                return
            self.auto += 1
            cid = "auto-%d-%d" % (self.auto, time.ticks_ms() & 0xFFFF)
            assigned = True
        # Session lifetime after this connection.
        if v == 5:
            # Capped even when the client asks for "never": session slots are few.
            exp = min(pr.get(P.SESSION_EXPIRY, 0), cfg["session_expiry_max"])
        else:
            exp = 0 if cn.clean else cfg["session_expiry_max"]
        # Takeover: the old connection goes, with its will.
        s = None
        for x in self.sess:
            if x.cid == cid:
                s = x
                break
        if s is not None and s.conn is not None:
            old = s.conn
            self._drop(old, 0x8E, True, "taken over by a new connection")
        present = False
        if s is not None and (cn.clean or not s.persist):
            self._end_session(s)
            s = None
        if s is not None:
            present = True
            if s.will is not None and s.will_at >= 0:
                s.will = None  # reconnected within the will delay: no will
                s.will_at = -1
        else:
            for x in self.sess:
                if x.cid is None:
                    s = x
                    break
            if s is None:
                self._connack_refuse(c, 0x97, "no free session slot (max_sessions %d)" % len(self.sess))
                return
            s.cid = cid
        s.conn = c
        s.version = v
        s.last_ack = time.ticks_ms()
        s.expiry = exp
        s.persist = exp > 0
        s.expire_at = -1
        s.will = cn.will
        s.will_props = cn.will.props if cn.will else None
        s.will_at = -1
        rm = pr.get(P.RECEIVE_MAXIMUM, 65535)
        s.send_max = min(rm, s.nf)
        c.sess = s.idx
        c.state = ONLINE
        c.out_max = min(pr.get(P.MAXIMUM_PACKET_SIZE, 0x7FFFFFFF), len(c.tx))
        c.ao_max = min(pr.get(P.TOPIC_ALIAS_MAXIMUM, 0), self.tam)
        ka = cn.keepalive
        mk = cfg["max_keepalive"]
        server_ka = -1
        if mk and v == 5 and (ka == 0 or ka > mk):
            server_ka = ka = mk
        c.ka = ka * 1500  # ms: 1.5 times the keepalive
        c.acl = s.acl = CFG.acl_for(cfg["acl_rules"], cn.user, cid)
        ap = None
        if v == 5:
            ap = {P.RECEIVE_MAXIMUM: s.nf, P.MAXIMUM_PACKET_SIZE: len(c.rx),
                  P.TOPIC_ALIAS_MAXIMUM: self.tam, P.RETAIN_AVAILABLE: 1,
                  P.WILDCARD_SUB_AVAILABLE: 1, P.SUB_ID_AVAILABLE: 1, P.SHARED_SUB_AVAILABLE: 1}
            if not self.tam:
                del ap[P.TOPIC_ALIAS_MAXIMUM]
            if assigned:
                ap[P.ASSIGNED_CLIENT_ID] = cid
            if server_ka >= 0:
                ap[P.SERVER_KEEPALIVE] = server_ka
            if exp != pr.get(P.SESSION_EXPIRY, 0):
                ap[P.SESSION_EXPIRY] = exp
            if c.auth_m is not None:
                ap[P.AUTH_METHOD] = c.auth_m
                if c.auth_d:
                    ap[P.AUTH_DATA] = c.auth_d
                c.auth_d = None
            ri = cfg["response_info"]
            if ri and pr.get(P.REQUEST_RESPONSE_INFO):
                # The basis of response topics for this client (3.2.2.3.15).
                ap[P.RESPONSE_INFO] = ri.replace("%c", cid)
        c.txt = codec.encode_connack(c.tx, present, 0, v, ap)
        self.log.info("%s %s connected v%s clean=%d keepalive=%d%s" % (
            cid, c.addr, "5" if v == 5 else "3.1.1", cn.clean, ka, " (session resumed)" if present else ""))
        if present:
            # Resend what was in flight, then the queue.
            for k in range(s.nf):
                st = s.f_state[k]
                if st == 1:
                    s.f_state[k] = 5
                    s.f_flags[k] |= 2
                elif st == 2:
                    s.f_state[k] = 6
        self._pump(s)
        self._flush(c)

    def _end_session(self, s):
        # Free a session slot and what it holds.
        if s.will is not None and s.will_at >= 0:
            self._will_due(s)
        self.subs.drop(s.idx)
        pool = self.pool
        for k in range(s.nf):
            if s.f_state[k]:
                if s.f_slot[k] >= 0:
                    pool.release(s.f_slot[k])
                s.f_state[k] = 0
                s.f_slot[k] = -1
        s.f_n = 0
        while s.q_n:
            pool.release(s.q_slot[s.q_head])
            s.q_head = (s.q_head + 1) % s.depth
            s.q_n -= 1
        s.q_head = 0
        s.r_n = 0
        s.cid = None
        s.acl = None
        s.conn = None
        s.will = None
        s.will_at = -1
        s.expire_at = -1
        s.persist = False


    # ---- SUBSCRIBE / UNSUBSCRIBE --------------------------------------------------

    def _subscribe(self, c, pkt):
        s = self.sess[c.sess]
        v5 = c.version == 5
        sid = 0
        if v5 and pkt.props:
            sid = pkt.props.get(P.SUBSCRIPTION_ID, [0])[0]
        codes = bytearray(len(pkt.topics))
        todo = []
        for n, (f, o) in enumerate(pkt.topics):
            q = o & 3
            foff = 0
            if f.startswith(b"$share/"):
                g = f.find(b"/", 7)
                if g <= 7 or g + 1 >= len(f) or b"+" in f[7:g] or b"#" in f[7:g]:
                    codes[n] = 0x8F if v5 else 0x80
                    continue
                if o & _NO_LOCAL:
                    self._drop(c, 0x82, True, "no local on a shared subscription")
                    return
                foff = g + 1
            if len(f) > self.width:
                codes[n] = 0x97 if v5 else 0x80
                self.log.warn("%s: filter over max_topic %d" % (s.cid, self.width))
                continue
            if c.acl is not None and not self._allowed_filter(c.acl, f[foff:]):
                codes[n] = 0x87 if v5 else 0x80
                self.log.info("%s: subscribe to %s denied" % (s.cid, f))
                continue
            row, existed = self.subs.add(s.idx, f, foff, o, sid)
            if row < 0:
                codes[n] = 0x97 if v5 else 0x80
                self.log.warn("%s: subscription table full (%d)" % (s.cid, self.subs.n))
                continue
            codes[n] = q
            rh = (o >> 4) & 3
            if not foff and (rh == 0 or (rh == 1 and not existed)):
                todo.append(row)
        if len(c.tx) - c.txt < 5 + len(codes):
            self._compact(c)
        try:
            c.txt += codec.encode_suback(memoryview(c.tx)[c.txt:], pkt.pid, codes, c.version)
        except MQTTException:
            self._drop(c, 0x97, True, "no room for SUBACK")
            return
        self.log.debug("%s subscribed %s -> %s" % (s.cid, [t[0] for t in pkt.topics], bytes(codes)))
        for row in todo:
            self._send_retained(s, row)
        self._flush(c)

    def _send_retained(self, s, row):
        pool = self.pool
        subs = self.subs
        fb = subs.buf
        fo = row * subs.w
        fl = subs.flen[row]
        q = subs.opts[row] & 3
        sid = subs.subid[row]
        for i in self.ret:
            if i < 0:
                continue
            if match(fb, fo, fl, pool.bufs[i], 0, pool.tn[i]):
                if pool.exp[i] >= 0 and pool.exp[i] <= self.secs:
                    continue
                if s.acl is not None and not self._allowed(s.acl, CFG.READ, pool.bufs[i], 0, pool.tn[i]):
                    continue
                mq = pool.qos[i]
                self._enqueue(s, i, q if q < mq else mq, 1, sid, False)

    def _unsubscribe(self, c, pkt):
        s = self.sess[c.sess]
        codes = bytearray(len(pkt.topics))
        for n, f in enumerate(pkt.topics):
            codes[n] = 0 if self.subs.remove(s.idx, f) else 0x11
        self._compact(c)
        try:
            c.txt += codec.encode_unsuback(memoryview(c.tx)[c.txt:], pkt.pid, codes, c.version)
        except MQTTException:
            self._drop(c, 0x97, True, "no room for UNSUBACK")
            return
        self._flush(c)

