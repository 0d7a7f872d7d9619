# The broker's bridge to upstream brokers (docs/bridge.md), imported only when
# the config has a "bridge" key. Each link is our own MQTTClient with a
# persistent session, driven from the broker's poll loop without blocking it
# for long: the upstream socket sits in the broker's poller, reads happen one
# packet at a time, a connect attempt is bounded by `timeout` and retried with
# exponential backoff.
#
# Out: every message the broker routes passes Bridges.out(); one matching an
# "out" rule is copied (prefix rewritten, no allocation) into the link's
# bounded byte queue and handed to the client when the link is up and the
# in-flight window has room. QoS 0 is dropped while the link is down; QoS 1/2
# waits in the queue (full: drop_oldest or drop_new, counted) and, once handed
# over, in the client's session, resent after a reconnect.
# In: upstream messages matching an "in" rule are routed locally with the
# prefix rewritten, straight from the client's receive buffer.
# Loops: a message that came from upstream never goes out again (origin flag);
# MQTT 5 links subscribe with no-local; 3.1.1 links drop the echo of what
# they sent on a "both" rule (a small table of topic+payload hashes).
# State: $SYS/broker/bridge/<name>/state (connected|disconnected) on every
# change, and .../sent, received, queued, dropped every sys_interval s when
# they changed, all retained.
import time
from random import getrandbits
from micropython import const
from .client import MQTTClient
from .errors import MQTTException, V4_CONNACK
from .topic import match, check_filter
from .broker_store import copy
from . import props as P

_NECHO = const(16)   # echo hashes kept per 3.1.1 link with "both" rules
_BURST = const(32)   # packets read / messages sent per link per poll pass
_HDR = const(5)      # queue entry: length (2), flags, topic length (2)

LINK_KEYS = {
    "name": "bridge", "host": None, "port": 0, "tls": False, "ca_file": None,
    "cert_file": None, "key_file": None, "user": None, "password": None,
    "client_id": None, "version": 4, "keepalive": 60, "clean": False,
    "session_expiry": 3600, "topics": None, "queue_bytes": 2048,
    "queue_policy": "drop_oldest", "inflight": 8, "timeout": 2,
    "backoff_min": 1, "backoff_max": 30, "max_packet": 0, "sys_interval": 5,
}
_DIRS = ("out", "in", "both")
# CONNACK refusals for the log, by 3.1.1 return code (MQTT 5 codes map onto
# these through errors.V4_CONNACK; the log gives the code as well).
_REFUSED = ("unacceptable protocol version", "client id rejected", "server unavailable",
            "bad user name or password", "not authorized")


def _err(name, msg):
    return ValueError("bridge %s: %s" % (name, msg))


def parse_rule(name, r):
    # mosquitto's `topic pattern [[[out|in|both] qos] local-prefix remote-prefix]`
    # as a string ("" for an empty prefix) or a list of the same fields.
    f = r.split() if isinstance(r, str) else list(r)
    if not f or len(f) > 5 or len(f) == 4:
        raise _err(name, "topic rule %r: want 'pattern [out|in|both [qos [local-prefix remote-prefix]]]'" % (r,))
    f = [x if not isinstance(x, str) or x != '""' else "" for x in f]
    pat = f[0]
    d = f[1] if len(f) > 1 else "out"
    if d not in _DIRS:
        raise _err(name, "topic rule %r: direction %r is not out, in or both" % (r, d))
    try:
        q = int(f[2]) if len(f) > 2 else 0
    except ValueError:
        q = -1
    if not 0 <= q <= 2:
        raise _err(name, "topic rule %r: qos must be 0, 1 or 2" % (r,))
    lp = f[3] if len(f) > 3 else ""
    rp = f[4] if len(f) > 4 else ""
    for p in (lp, rp):
        if "#" in p or "+" in p:
            raise _err(name, "topic rule %r: a prefix cannot hold wildcards" % (r,))
    if not pat:
        raise _err(name, "topic rule %r: empty pattern" % (r,))
    for t in (lp + pat, rp + pat):
        b = t.encode()
        try:
            check_filter(b, 0, len(b))
        except MQTTException:
            raise _err(name, "topic rule %r: %r is not a valid topic filter" % (r, t))
    return pat.encode(), d, q, lp.encode(), rp.encode()


class Queue:
    # A fixed byte ring of entries [len:2][flags][topic len:2][topic][payload],
    # written and read with the broker's copy(): no allocation.
    def __init__(self, size, drop_new):
        self.b = bytearray(size)
        self.size = size
        self.drop_new = drop_new
        self.head = 0
        self.used = 0
        self.count = 0
        self.dropped = 0

    def _w(self, pos, src, soff, n):
        k = self.size - pos
        if n <= k:
            copy(self.b, pos, src, soff, n)
        else:
            copy(self.b, pos, src, soff, k)
            copy(self.b, 0, src, soff + k, n - k)
        pos += n
        return pos - self.size if pos >= self.size else pos

    def _at(self, i):
        return self.b[(self.head + i) % self.size]

    def pop(self):
        n = self._at(0) << 8 | self._at(1)
        self.head = (self.head + 2 + n) % self.size
        self.used -= 2 + n
        self.count -= 1

    def room(self, n):
        # Make room for an entry of n bytes after its length; False: drop it.
        need = n + 2
        if need > self.size:
            return False
        while self.size - self.used < need:
            if self.drop_new or not self.count:
                return False
            self.pop()
            self.dropped += 1
        return True

    def put(self, hdr, p1, p1n, tb, to, tn, yb, yo, yn):
        # hdr[0:5] already holds the entry's flags and topic length; the topic
        # is p1[0:p1n] + tb[to:to+tn], the payload yb[yo:yo+yn].
        n = _HDR - 2 + p1n + tn + yn
        if not self.room(n):
            self.dropped += 1
            return False
        hdr[0] = n >> 8
        hdr[1] = n & 0xFF
        pos = (self.head + self.used) % self.size
        pos = self._w(pos, hdr, 0, _HDR)
        pos = self._w(pos, p1, 0, p1n)
        pos = self._w(pos, tb, to, tn)
        self._w(pos, yb, yo, yn)
        self.used += n + 2
        self.count += 1
        return True

    def head_qos(self):
        return self._at(2) & 3

    def get(self, dst):
        # Copy the oldest entry (after its length) into dst; its length.
        n = self._at(0) << 8 | self._at(1)
        p = (self.head + 2) % self.size
        k = self.size - p
        if n <= k:
            copy(dst, 0, self.b, p, n)
        else:
            copy(dst, 0, self.b, p, k)
            copy(dst, k, self.b, 0, n - k)
        self.pop()
        return n


def _hash(h, buf, off, n):
    for i in range(off, off + n):
        h = (h * 33 + buf[i]) & 0x3FFFFFF
    return h


class Link:
    def __init__(self, g, b, cfg):
        for k in cfg:
            if k not in LINK_KEYS:
                raise _err(cfg.get("name", "bridge"), "unknown setting %r" % k)
        c = dict(LINK_KEYS)
        c.update(cfg)
        name = c["name"]
        if not isinstance(name, str) or not name or "/" in name or "+" in name or "#" in name:
            raise _err(name, "name must be a non-empty string without / + #")
        if not c["host"]:
            raise _err(name, "host is required")
        if c["version"] not in (4, 5):
            raise _err(name, "version must be 4 (MQTT 3.1.1) or 5")
        if c["queue_policy"] not in ("drop_oldest", "drop_new"):
            raise _err(name, "queue_policy must be drop_oldest or drop_new")
        if not c["topics"]:
            raise _err(name, "topics: at least one rule")
        if (c["cert_file"] is None) != (c["key_file"] is None):
            raise _err(name, "cert_file and key_file go together")
        for k in ("port", "keepalive", "session_expiry", "queue_bytes", "inflight", "max_packet"):
            if not isinstance(c[k], int) or c[k] < (k == "inflight"):
                raise _err(name, "%s must be an integer >= %d" % (k, k == "inflight"))
        self.g = g
        self.b = b
        self.name = name
        self.v5 = c["version"] == 5
        size = c["max_packet"] or b.size
        self.outs = []  # (local filter, local prefix length, remote prefix, qos)
        self.ins = []   # (remote filter, remote prefix length, local prefix, qos)
        both = False
        for r in c["topics"]:
            pat, d, q, lp, rp = parse_rule(name, r)
            if d != "in":
                self.outs.append((lp + pat, len(lp), rp, q))
            if d != "out":
                self.ins.append((rp + pat, len(rp), lp, q))
            both = both or d == "both"
        self.clean = bool(c["clean"])
        self.sys_every = c["sys_interval"]
        self.q = Queue(c["queue_bytes"], c["queue_policy"] == "drop_new")
        self.hdr = bytearray(_HDR)
        self.st = bytearray(size)        # one queue entry on its way to the client
        self.lt = bytearray(b.width + max([len(x[2]) for x in self.ins] or [0]))  # local topic of an "in" message
        self.echo = [0] * _NECHO if both and not self.v5 else None
        self.ei = 0
        ssl = None
        if c["tls"]:
            ssl = self._tls(c)
        cid = c["client_id"] or "umqtt-bridge-" + name
        self.c = MQTTClient(cid, c["host"], port=c["port"], user=c["user"], password=c["password"],
                            keepalive=c["keepalive"], ssl=ssl, version=c["version"],
                            session_expiry=c["session_expiry"] if self.v5 and not self.clean else 0,
                            rx_size=size, tx_size=size, inflight=c["inflight"], timeout=c["timeout"],
                            topic_alias_out=0)
        self.c.set_callback(self._on_msg, zero_copy=True)
        self.inflight = c["inflight"]
        self.win = self.inflight
        self.maxq = 2
        self.retain_ok = True
        self.bmin = c["backoff_min"]
        self.bmax = c["backoff_max"]
        self.attempt = 0
        self.why = None    # why the last connect attempt failed (for the log)
        self.next_try = time.ticks_ms()
        self.up = None     # None: state not yet published
        self.subscribed = False
        self.reg = None    # the socket registered in the broker's poller
        self.sent = self.received = self.dropped = self.echoes = 0
        self.last = None   # counters last published
        self.t_sys = time.ticks_ms()
        self.sys = ("$SYS/broker/bridge/%s/" % name).encode()
        self.where = "%s:%d" % (c["host"], self.c.port)

    def _tls(self, c):
        import ssl
        x = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if c["ca_file"]:
            with open(c["ca_file"], "rb") as f:
                x.load_verify_locations(cadata=f.read())
            x.verify_mode = ssl.CERT_REQUIRED
        else:
            x.verify_mode = ssl.CERT_NONE
        if c["cert_file"]:
            with open(c["cert_file"], "rb") as f:
                crt = f.read()
            with open(c["key_file"], "rb") as f:
                key = f.read()
            x.load_cert_chain(crt, key)
        return x

    # ---- out: from the broker's routing (no allocation) -------------------------

    def out(self, b):
        tb = b.m_tb
        to = b.m_to
        tn = b.m_tn
        for lf, nlp, rp, q in self.outs:
            if match(lf, 0, len(lf), tb, to, tn):
                if b.m_qos < q:
                    q = b.m_qos
                if not q and not self.up:
                    self.dropped += 1  # QoS 0 is not kept for a link that is down
                    return
                h = self.hdr
                h[2] = q | (4 if b.m_ret else 0)
                n = len(rp) + tn - nlp
                h[3] = n >> 8
                h[4] = n & 0xFF
                if _HDR + n + b.m_yn > len(self.st):
                    self.dropped += 1  # larger than the client's buffer
                else:
                    # Full (drop_new) or larger than the queue: put() counts it.
                    self.q.put(h, rp, len(rp), tb, to + nlp, tn - nlp, b.m_yb, b.m_yo, b.m_yn)
                return

    # ---- the link, once per poll pass ---------------------------------------------

    def step(self, now):
        c = self.c
        if c.sock is None and time.ticks_diff(now, self.next_try) >= 0:
            self._connect()
        if c.sock is not None:
            try:
                k = 0
                while k < _BURST and c.check_msg():
                    k += 1
                self._drain()
            except (OSError, MQTTException) as e:
                self._down(e)
        s = c.sock
        if s is not self.reg:
            p = self.b.p
            if self.reg is not None:
                try:
                    p.unregister(self.reg)
                except Exception:
                    pass
            if s is not None:
                p.register(s, 1)
            self.reg = s
        if self.up is None:
            self._state(False)
        if self.sys_every and time.ticks_diff(now, self.t_sys) >= self.sys_every * 1000:
            self.t_sys = now
            self._counters()

    def _connect(self):
        c = self.c
        log = self.b.log
        sp = None
        try:
            sp = c.connect(clean_session=self.clean)
            if not self.subscribed:
                # Once: the client restores them itself into a session the
                # upstream lost, and a kept session still has them.
                for rf, nrp, lp, q in self.ins:
                    try:
                        c.subscribe(rf, q, no_local=self.v5, retain_as_published=self.v5)
                    except MQTTException as e:
                        log.error("bridge %s: upstream refused subscription %s: %r" % (self.name, rf, e))
                        c.unsubscribe(rf)
                self.subscribed = True
        except Exception as e:  # OSError, MQTTException, TLS errors
            try:
                c.disconnect()
            except Exception:
                pass
            why = repr(e)
            if sp is None and isinstance(e, MQTTException) and len(e.args) == 1:
                # The CONNACK said no: name the reason (credentials, client id...).
                k = V4_CONNACK.get(e.code, 0) if self.v5 else e.code
                if 1 <= k <= 5:
                    why = "refused by the upstream: %s (CONNACK code %d)" % (_REFUSED[k - 1], e.code)
            d = self.bmin * (1 << min(self.attempt, 16))
            if d > self.bmax:
                d = self.bmax
            d = int(d * (512 + getrandbits(9)) // 1024 * 1000) if d else 0
            self.next_try = time.ticks_add(time.ticks_ms(), d)
            self.attempt += 1
            if self.attempt == 1 or self.up or why != self.why:
                # Logged once per outage, and again when the reason changes.
                log.warn("bridge %s: cannot connect to %s: %s (retrying with backoff)" % (self.name, self.where, why))
            self.why = why
            if self.up is not False:
                self._state(False)
            return
        self.attempt = 0
        self.why = None
        r = c.connack_props.get(P.RECEIVE_MAXIMUM, 65535)
        self.win = r if r < self.inflight else self.inflight
        self.maxq = c.connack_props.get(P.MAXIMUM_QOS, 2)
        self.retain_ok = c.connack_props.get(P.RETAIN_AVAILABLE, 1) == 1
        log.info("bridge %s: connected to %s (session present %d, %d in flight resent, %d queued)" % (
            self.name, self.where, sp, c.inflight(), self.q.count))
        self._state(True)

    def _down(self, e):
        self.b.log.warn("bridge %s: link to %s lost: %r" % (self.name, self.where, e))
        try:
            self.c.disconnect()
        except Exception:
            pass
        self.next_try = time.ticks_add(time.ticks_ms(), int(self.bmin * 1000))
        self._state(False)

    def _drain(self):
        # Queue -> client while the in-flight window has room.
        q = self.q
        c = self.c
        st = self.st
        k = 0
        while q.count and k < _BURST:
            qos = q.head_qos()
            if qos and c.inflight() >= self.win:
                return
            k += 1
            n = q.get(st)
            tn = st[1] << 8 | st[2]
            topic = bytes(st[_HDR - 2:_HDR - 2 + tn])
            msg = bytes(st[_HDR - 2 + tn:n])
            try:
                # Within what a v5 upstream said it takes (CONNACK).
                c.publish(topic, msg, (st[0] & 4) != 0 and self.retain_ok,
                          qos if qos <= self.maxq else self.maxq, wait=False)
            except MQTTException as e:
                self.dropped += 1
                self.b.log.warn("bridge %s: upstream refused a message on %s: %r" % (self.name, topic, e))
                continue
            except OSError:
                if not qos:
                    self.dropped += 1  # QoS 1/2 is in the client's session: resent
                raise
            self.sent += 1
            if self.echo is not None and self._in_rule(topic, 0, len(topic)):
                self.echo[self.ei] = _hash(_hash(5381, topic, 0, len(topic)), msg, 0, len(msg)) or 1
                self.ei = (self.ei + 1) % _NECHO

    # ---- in: from the client's receive buffer --------------------------------------

    def _in_rule(self, tb, to, tn):
        for r in self.ins:
            rf = r[0]
            if match(rf, 0, len(rf), tb, to, tn):
                return r
        return None

    def _on_msg(self, m):
        tb = m.topic_buf
        to = m.topic_off
        tn = m.topic_len
        self.received += 1
        e = self.echo
        if e is not None:
            h = _hash(_hash(5381, tb, to, tn), m.buf, m.payload_off, m.payload_len) or 1
            for i in range(_NECHO):
                if e[i] == h:
                    e[i] = 0
                    self.echoes += 1
                    return  # our own message back from a 3.1.1 upstream
        r = self._in_rule(tb, to, tn)
        if r is None:
            return
        nrp = r[1]
        lp = r[2]
        n = len(lp) + tn - nrp
        if n > len(self.lt):
            self.dropped += 1
            return
        lt = self.lt
        copy(lt, 0, lp, 0, len(lp))
        copy(lt, len(lp), tb, to + nrp, tn - nrp)
        g = self.g
        g.injecting = self  # not back out on this link; other links may take it
        try:
            self.b._inject(memoryview(lt)[:n], b"", 0,
                           memoryview(m.buf)[m.payload_off:m.payload_off + m.payload_len],
                           m.qos, m.retain, -1)
        finally:
            g.injecting = None

    # ---- $SYS -------------------------------------------------------------------------

    def _state(self, up):
        self.up = up
        self._sys(b"state", b"connected" if up else b"disconnected")
        self._counters()

    def _counters(self):
        v = (self.sent, self.received, self.q.count, self.dropped + self.q.dropped + self.c.dropped)
        if v == self.last:
            return
        self.last = v
        for k, x in zip((b"sent", b"received", b"queued", b"dropped"), v):
            self._sys(k, b"%d" % x)

    def _sys(self, key, val):
        g = self.g
        g.injecting = True
        try:
            self.b._inject(self.sys + key, b"", 0, val, 0, True, -1)
        finally:
            g.injecting = None

    def stats(self):
        return {"state": "connected" if self.up else "disconnected", "sent": self.sent,
                "received": self.received, "queued": self.q.count, "inflight": self.c.inflight(),
                "dropped": self.dropped + self.q.dropped + self.c.dropped, "echoes": self.echoes}

    def close(self):
        if self.reg is not None:
            try:
                self.b.p.unregister(self.reg)
            except Exception:
                pass
            self.reg = None
        try:
            self.c.disconnect()
        except Exception:
            pass


class Bridges:
    # What the broker holds: its links, and the origin flag that keeps
    # messages from upstream (and the bridge's own $SYS) from going out again.
    def __init__(self, broker, cfg):
        if isinstance(cfg, dict):
            cfg = [cfg]
        self.injecting = None  # None, the link routing an upstream message, or True ($SYS)
        self.links = []
        names = []
        for c in cfg:
            if not isinstance(c, dict):
                raise ValueError("bridge: each bridge is a dict of settings, not %r" % (c,))
            ln = Link(self, broker, c)
            if ln.name in names:
                raise _err(ln.name, "two bridges with this name")
            names.append(ln.name)
            self.links.append(ln)

    def out(self, b):
        o = self.injecting
        if o is True:
            return
        for ln in self.links:
            if ln is not o:
                ln.out(b)

    def step(self):
        now = time.ticks_ms()
        for ln in self.links:
            ln.step(now)

    def stats(self):
        return dict((ln.name, ln.stats()) for ln in self.links)

    def close(self):
        for ln in self.links:
            ln.close()
