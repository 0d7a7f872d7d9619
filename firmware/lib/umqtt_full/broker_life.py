# The broker's connection life cycle and timers: answering connections past
# max_clients, leaving a connection (will, persistent session), wills,
# keepalive and connect timeouts, session and retained expiry, $SYS stats.
# A mixin of Broker (broker.py), split out so each module compiles within a
# small heap.
import time
import gc
from . import codec
from . import props as P
from .broker_store import copy
from .broker_conn import FREE, ONLINE, PENDING, ZOMBIE, REFUSE

_NEVER = 0xFFFFFFFF  # session expiry "never"


class Life:
    def _refuse_read(self, c, ev):
        n = 0
        if ev:
            try:
                n = c.sock.readinto(self.scratch, 16 - c.rxn)
            except OSError:
                n = 0
            if n is None:
                return
        if n:
            copy(c.rx, c.rxn, self.scratch, 0, n)
            c.rxn += n
        b = c.rx
        i = 1
        while i < c.rxn and b[i] & 0x80:
            i += 1
        lvl = i + 7  # fixed header, 00 04 M Q T T, level
        if ev and n and lvl >= c.rxn and c.rxn < 16:
            return
        if b[0] == 0x10 and lvl < c.rxn:
            v5 = b[lvl] == 5
            try:
                c.sock.write(b"\x20\x03\x00\x97\x00" if v5 else b"\x20\x02\x00\x03")
            except OSError:
                pass
        self.p.unregister(c.sock)
        c.sock.close()
        c.reset()

    def _drop(self, c, reason=None, will=True, why=""):
        # Leave the connection: optional v5 DISCONNECT reason, will unless a
        # clean DISCONNECT, session kept if persistent. The socket itself is
        # closed by _reap after the poll pass.
        if c.state == FREE or c.state == ZOMBIE:
            return
        if why:
            self.log.info("%s %s: %s" % (self._cid(c), c.addr, why))
        if reason is not None and c.version == 5 and c.state == ONLINE:
            c.txh = c.txt = 0  # the DISCONNECT goes first; the rest is lost anyway
            c.txt = codec.encode_disconnect(c.tx, reason, 5)
            self._send_now(c)
        elif c.txt > c.txh:
            # One write, no refill and no drop: _flush would call _drop again
            # on a write error (endless recursion on a dead socket).
            self._send_now(c)
        si = c.sess
        c.state = ZOMBIE
        if si >= 0:
            s = self.sess[si]
            s.conn = None
            c.sess = -1
            if s.will is not None:
                if will:
                    d = s.will_props.get(P.WILL_DELAY, 0) if s.will_props else 0
                    if d and s.persist:
                        s.will_at = self.secs + min(d, s.expiry)
                    else:
                        self._will_due(s)
                else:
                    s.will = None
            if s.persist:
                s.expire_at = -1 if s.expiry == _NEVER else self.secs + s.expiry
                if not s.expiry:
                    self._end_session(s)
            else:
                self._end_session(s)

    def _reap(self):
        for c in self.conns:
            if c.state == ZOMBIE:
                try:
                    self.p.unregister(c.sock)
                except Exception:
                    pass
                try:
                    c.sock.close()
                except OSError:
                    pass
                c.reset()

    def _cid(self, c):
        return self.sess[c.sess].cid if c.sess >= 0 else "-"

    # ---- will, timers, $SYS -----------------------------------------------------

    def _will_due(self, s):
        # Wills are routed after the current pass, never from inside a route.
        if s.will is not None:
            self.wills.append((s.will, s.will_props, s.idx, s.cid))
        s.will = None
        s.will_at = -1

    def _run_wills(self):
        while self.wills:
            w, wp, si, cid = self.wills.pop(0)
            self._publish_will(w, wp or {}, si, cid)

    def _publish_will(self, w, wp, si, cid):
        exp = wp.get(P.MESSAGE_EXPIRY, -1)
        pp = {}
        for k in wp:
            if k != P.WILL_DELAY and k != P.MESSAGE_EXPIRY:
                pp[k] = wp[k]
        n = P.put_body(self.scratch, 0, pp) if pp else 0
        self.log.info("%s: publishing will on %s" % (cid, w.topic))
        self._inject(w.topic, self.scratch, n, w.msg, w.qos, w.retain, exp, si)

    def _inject(self, topic, pbuf, plen, msg, qos, retain, exp, frm=-1):
        # Route a message the broker makes itself (will, $SYS).
        self.m_tb = topic
        self.m_to = 0
        self.m_tn = len(topic)
        self.m_pb = pbuf
        self.m_po = 0
        self.m_pe = plen
        self.m_plen = plen
        self.m_yb = msg
        self.m_yo = 0
        self.m_yn = len(msg)
        self.m_qos = qos
        self.m_ret = retain
        self.m_exp = exp
        self.m_from = frm
        if retain:
            self._retain()
        self._route()

    def _timers(self, now):
        for c in self.conns:
            st = c.state
            if st == ONLINE and c.ka and time.ticks_diff(now, c.last) > c.ka:
                self._drop(c, 0x8D, True, "keepalive timeout")
            elif st == PENDING and time.ticks_diff(now, c.last) > self.cfg["connect_timeout"] * 1000:
                self._drop(c, None, False, "no CONNECT in time")
        for c in self.refusers:
            if c.state == REFUSE and time.ticks_diff(now, c.last) > 2000:
                self._refuse_read(c, 0)
        self._reap()
        if self.wills:
            self._run_wills()
        if time.ticks_diff(now, self.t_sec) < 1000:
            return
        self.t_sec = time.ticks_add(self.t_sec, 1000)
        self.secs += 1
        for s in self.sess:
            if s.cid is None or s.conn is not None:
                continue
            if s.will_at >= 0 and s.will_at <= self.secs:
                self._will_due(s)
            if s.expire_at >= 0 and s.expire_at <= self.secs:
                self.log.info("%s: session expired" % s.cid)
                self._end_session(s)
        for k in range(len(self.ret)):
            i = self.ret[k]
            if i >= 0 and 0 <= self.pool.exp[i] <= self.secs:
                self.pool.release(i)
                self.ret[k] = -1
                self.nret -= 1
        if self.wills:
            self._run_wills()
        if self.store:
            self.store.tick()
        si = self.cfg["sys_interval"]
        if si and self.secs >= self.sys_next:
            self.sys_next = self.secs + si
            self._sys()

    def stats(self):
        gc.collect()
        return {"heap/free": gc.mem_free(), "clients/connected": sum(1 for c in self.conns if c.state == ONLINE),
                "messages/received": self.received, "messages/sent": self.sent,
                "messages/dropped": self.dropped, "retained/count": self.nret,
                "subscriptions/count": self.subs.count, "store/used": self.pool.used}

    def _sys(self):
        st = self.stats()
        for k in st:
            self._inject(b"$SYS/broker/" + k.encode(), b"", 0, str(st[k]).encode(), 0, False, -1)
        self.log.debug("stats %s" % st)



