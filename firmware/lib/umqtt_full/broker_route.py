# The broker's message path in: a PUBLISH from a client, the retained table,
# matching against the subscription table, and delivery to each session (its
# tx buffer directly, or the pool, queue and in-flight table). A mixin of
# Broker (broker.py), split out so each module compiles in a small heap.
# No allocation on the QoS 0 path: offsets into existing buffers, viper copies.
import time
from micropython import const
from . import codec
from .topic import match
from .broker_store import copy, same
from .broker_conn import ONLINE
from .broker_out import _pass_len, _pass_copy
from . import broker_config as CFG

_NONE = const(0xFF)
_NSID = const(4)     # subscription ids kept per session per message
_NO_LOCAL = const(0x04)
_RAP = const(0x08)
_READ = const(1)     # broker_config.READ


class Router:
    # ---- PUBLISH in --------------------------------------------------------------

    def _on_publish(self, c, pkt):
        self.received += 1
        s = self.sess[c.sess]
        rx = c.rx
        qos = pkt.qos
        tb = rx
        to = pkt.topic_off
        tn = pkt.topic_len
        if c.version == 5:
            a = pkt.alias
            if a:
                if a > self.tam:
                    self._drop(c, 0x94, True, "topic alias %d over maximum" % a)
                    return
                a -= 1
                if tn:
                    if tn > self.width:
                        self._drop(c, 0x94, True, "aliased topic over max_topic")
                        return
                    copy(c.ai, a * self.width, rx, to, tn)
                    c.ai_len[a] = tn
                else:
                    tn = c.ai_len[a]
                    if not tn:
                        self._drop(c, 0x82, True, "unknown topic alias %d" % (a + 1))
                        return
                    tb = c.ai
                    to = a * self.width
        if c.acl is not None and not self._allowed(c.acl, CFG.WRITE, tb, to, tn):
            self.log.info("%s: publish to %s denied" % (s.cid, bytes(tb[to:to + tn])))
            if qos == 1:
                self._put_ack(c, codec.PUBACK, pkt.pid, 0x87)
            elif qos == 2:
                self._put_ack(c, codec.PUBREC, pkt.pid, 0x87)
            return
        if qos == 2:
            if s.rx_has(pkt.pid) >= 0:
                self._put_ack(c, codec.PUBREC, pkt.pid, 0)  # a resend: not routed again
                return
            if s.r_n >= s.nf:
                self._drop(c, 0x93, True, "receive maximum exceeded")
                return
            s.r_pid[s.r_n] = pkt.pid
            s.r_n += 1
        self.m_tb = tb
        self.m_to = to
        self.m_tn = tn
        self.m_pb = rx
        self.m_po = pkt.props_off
        self.m_pe = pkt.props_end
        self.m_plen = _pass_len(rx, pkt.props_off, pkt.props_end) if c.version == 5 else 0
        self.m_yb = rx
        self.m_yo = pkt.payload_off
        self.m_yn = pkt.payload_len
        self.m_qos = qos
        self.m_ret = pkt.retain
        self.m_exp = pkt.expiry
        self.m_from = c.sess
        self.m_full = False
        if pkt.retain:
            self._retain()
        self._route()
        if qos and self.store:
            self.store.sync()  # persist_interval 0: on file before the ack
        if qos:
            rc = 0 if self.m_hits else 0x10
            if self.m_full and c.version == 5:
                # Not kept for every subscriber (or not retained): the
                # publisher hears 0x97 quota exceeded. A QoS 2 flow ends at
                # an error PUBREC [MQTT-4.3.3], so its id is released now.
                rc = 0x97
                if qos == 2:
                    s.rx_del(pkt.pid)
            self._put_ack(c, codec.PUBACK if qos == 1 else codec.PUBREC, pkt.pid, rc)

    def _allowed(self, acl, need, tb, to, tn):
        ok = False
        for acc, f in acl:
            if match(f, 0, len(f), tb, to, tn):
                if acc & CFG.DENY:
                    return False
                if acc & need:
                    ok = True
        return ok

    def _allowed_filter(self, acl, f):
        # A subscription is allowed when a read rule covers the whole filter
        # (the filter read as a topic name matches the rule).
        return self._allowed(acl, CFG.READ, f, 0, len(f))

    def _store(self):
        # The routed message in the pool (once per message), or -1.
        if self.m_slot >= 0:
            return self.m_slot
        pool = self.pool
        i = pool.alloc(self.m_tn, self.m_plen, self.m_yn)
        if i < 0:
            return -1
        b = pool.bufs[i]
        copy(b, 0, self.m_tb, self.m_to, self.m_tn)
        _pass_copy(b, self.m_tn, self.m_pb, self.m_po, self.m_pe)
        copy(b, self.m_tn + self.m_plen, self.m_yb, self.m_yo, self.m_yn)
        pool.qos[i] = self.m_qos
        pool.exp[i] = -1 if self.m_exp < 0 else self.secs + self.m_exp
        self.m_slot = i
        return i

    def _retain(self):
        # Retained table: replace the topic's message, or delete it on an
        # empty payload.
        pool = self.pool
        tn = self.m_tn
        ret = self.ret
        free = -1
        for k in range(len(ret)):
            i = ret[k]
            if i < 0:
                if free < 0:
                    free = k
                continue
            if pool.tn[i] == tn and same(pool.bufs[i], 0, self.m_tb, self.m_to, tn):
                pool.release(i)
                ret[k] = -1
                self.nret -= 1
                free = k
                break
        if not self.m_yn:
            return
        if free < 0:
            self.m_full = True
            self.log.warn("retained table full (%d): message on %s not retained" % (len(ret), bytes(self.m_tb[self.m_to:self.m_to + tn])))
            return
        i = self._store()
        if i < 0:
            self.m_full = True
            self.log.warn("message pool full: retained message not kept")
            return
        pool.hold(i)
        ret[free] = i
        self.nret += 1

    # ---- routing ------------------------------------------------------------------

    def _route(self):
        if self.bridge is not None:
            self.bridge.out(self)  # broker_bridge: a copy for each matching "out" rule
        subs = self.subs
        owner = subs.owner
        hq = self.h_qos
        hits = self.hits
        nh = 0
        shared = False
        tb = self.m_tb
        to = self.m_to
        tn = self.m_tn
        frm = self.m_from
        sess = self.sess
        for i in range(subs.top):
            o = owner[i]
            if o < 0 or not subs.match(i, tb, to, tn):
                continue
            acl = sess[o].acl
            if acl is not None and not self._allowed(acl, _READ, tb, to, tn):
                continue  # read rights per message: a deny under a granted filter holds
            opts = subs.opts[i]
            if subs.foff[i]:
                self.mark[i] = 1
                shared = True
                continue
            if opts & _NO_LOCAL and o == frm:
                continue
            q = opts & 3
            if hq[o] == _NONE:
                hq[o] = q
                self.h_rap[o] = opts & _RAP
                self.h_nsid[o] = 0
                hits[nh] = o
                nh += 1
            else:
                if q > hq[o]:
                    hq[o] = q
                self.h_rap[o] |= opts & _RAP
            sid = subs.subid[i]
            if sid and self.h_nsid[o] < _NSID:
                self.h_sid[o * _NSID + self.h_nsid[o]] = sid
                self.h_nsid[o] += 1
        mq = self.m_qos
        for k in range(nh):
            o = hits[k]
            q = hq[o]
            hq[o] = _NONE
            self._deliver(o, q if q < mq else mq, self.m_ret and self.h_rap[o], -1)
        self.m_hits = nh + shared  # for PUBACK 0x10 "no matching subscribers"
        if shared:
            self._route_shared()
        if self.m_slot >= 0:
            self.pool.release(self.m_slot)
            self.m_slot = -1

    def _route_shared(self):
        # One member of each matching $share group gets the message: the
        # online one served longest ago (round robin).
        subs = self.subs
        mark = self.mark
        for i in range(subs.top):
            if not mark[i]:
                continue
            best = -1
            bon = False
            for j in range(i, subs.top):
                if mark[j] and subs.same_group(i, j):
                    mark[j] = 0
                    s = self.sess[subs.owner[j]]
                    on = s.conn is not None
                    if best < 0 or (on and not bon) or (on == bon and subs.seq[j] < subs.seq[best]):
                        best = j
                        bon = on
            self.seq += 1
            subs.seq[best] = self.seq
            o = subs.owner[best]
            q = subs.opts[best] & 3
            sid = subs.subid[best]
            self.h_nsid[o] = 1 if sid else 0
            self.h_sid[o * _NSID] = sid
            self._deliver(o, q if q < self.m_qos else self.m_qos,
                          self.m_ret and subs.opts[best] & _RAP, -1)

    def _deliver(self, o, q, retain, sid):
        # The routed message to session o at QoS q. sid -1: the ids gathered
        # in h_sid; else one id (0: none).
        s = self.sess[o]
        if s.cid is None:
            return  # ended while this message was being routed
        c = s.conn
        if q == 0:
            # QoS 0 goes straight into tx or is dropped: never queued, never
            # offline, so a reader that stalls costs no pool slots.
            if c is None:
                return
            r = self._put_pub(c, o, self.m_tb, self.m_to, self.m_tn, self.m_pb, self.m_po,
                              self.m_pe, True, self.m_yb, self.m_yo, self.m_yn, self.m_exp,
                              0, 0, retain, sid)
            # Written: poll() flushes every tx with bytes at the end of the
            # pass, so a burst goes out in one write per subscriber.
            if not r:
                s.dropped += 1
                self.dropped += 1
            return
        i = self._store()
        if i < 0:
            self.m_full = True
            s.dropped += 1
            self.dropped += 1
            self.log.warn("%s: message pool full (%d slots), QoS %d message dropped" % (s.cid, self.pool.n, q))
            return
        self._enqueue(s, i, q, 1 if retain else 0, sid, True)

    def _enqueue(self, s, i, q, flags, sid, live):
        if s.q_n >= s.depth:
            s.dropped += 1
            self.dropped += 1
            c = s.conn
            if live and c is not None and q and c.state == ONLINE and \
                    time.ticks_diff(time.ticks_ms(), s.last_ack) > self.slow_ms:
                # Slow consumer policy: the queue is full and nothing was
                # acknowledged for slow_timeout s: disconnect (0x97); its
                # session stays if persistent. Otherwise the message is dropped.
                self._drop(c, 0x97, True, "slow consumer: queue of %d full, no ack for %d ms" % (
                    s.depth, time.ticks_diff(time.ticks_ms(), s.last_ack)))
            return
        k = (s.q_head + s.q_n) % s.depth
        s.q_slot[k] = i
        s.q_qos[k] = q
        s.q_flags[k] = flags
        # Subscription ids: sid >= 0 one id (0: none), -1 the ids gathered
        # for this session in h_sid by the route.
        qs = s.q_sid
        b = k * _NSID
        if sid >= 0:
            qs[b] = sid
            n = 1
        else:
            n = self.h_nsid[s.idx]
            for j in range(n):
                qs[b + j] = self.h_sid[s.idx * _NSID + j]
        for j in range(n, _NSID):
            qs[b + j] = 0
        s.q_n += 1
        self.pool.hold(i)
        if s.conn is not None:
            self._pump(s)

