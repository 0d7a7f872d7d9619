# A tiny MQTT 3.1.1 + 5.0 broker on preallocated tables and one non-blocking
# select.poll loop. Run: micropython -m umqtt_full.broker --host H --port P
# [--config FILE]. From Python: Broker(cfg).serve_forever(), .poll(ms) for one
# step, or `await broker.serve()` beside other asyncio tasks.
#
# Memory: every buffer and table is made in __init__ from the config (see
# docs/broker.md). A QoS 0 PUBLISH is read into the publisher's rx buffer,
# matched against the subscription table and encoded straight into each
# subscriber's tx buffer with no allocation; QoS 1/2, queued and retained
# messages are copied once into the stored-message pool and shared by
# reference count.
import time
import select
import socket
import gc
from micropython import const
# Collect between the big imports: compiling from source on a 128 KB heap
# needs the space the previous module's parse left behind.
gc.collect()
from .broker_store import Pool, Subs
from .codec import Packet
from .broker_out import Out
gc.collect()
from .broker_route import Router
gc.collect()
from .broker_proto import Proto
gc.collect()
from .broker_life import Life
gc.collect()
from .broker_conn import Conn, Session, FREE, PENDING, ONLINE, REFUSE
from . import broker_config as CFG

_PIN = const(1)      # select.POLLIN
_PERRS = const(0x18)  # POLLERR | POLLHUP
_POUT = const(4)     # select.POLLOUT
_RESERVE = const(48)  # tx bytes kept free of PUBLISH for acks and pings
_NSID = const(4)     # subscription ids kept per session per message
_NO_LOCAL = const(0x04)
_NEVER = 0xFFFFFFFF  # session expiry "never"


class Broker(Proto, Life, Router, Out):
    wls = None  # the WebSocket/HTTP listener, set only with ws_port (broker_ws)
    auth = None  # enhanced authentication (v5 AUTH), see docs/broker.md

    def __init__(self, config=None, auth=None):
        # auth: auth(client_id, method, data, step) -> (reason, data) for v5
        # enhanced authentication: 0 accepted, 0x18 send data and continue,
        # >= 0x80 refused with that reason. None refuses every method (0x8C).
        if auth is not None:
            self.auth = auth
        cfg = CFG.load(config)
        self.cfg = cfg
        self.log = CFG.Log(cfg["log_level"])
        if cfg["bridge"]:
            from . import broker_bridge  # the client compiles before the tables take the heap
        if cfg["persist_file"]:
            from .broker_persist import Persist  # compiled before the tables; loads after them
        gc.collect()
        free0 = gc.mem_free()
        nc = cfg["max_clients"]
        ns = cfg["max_sessions"]
        size = cfg["max_packet"]
        width = cfg["max_topic"]
        self.size = size
        self.width = width
        self.tam = cfg["topic_alias_max"]
        # Largest blocks first: a heap fragmented by compiling still has room.
        self.pool = Pool(cfg["msg_slots"], cfg["msg_size"])
        self.scratch = bytearray(size)      # reads after a partial packet; will properties
        self.conns = [Conn(i, size, self.tam, width) for i in range(nc)]
        self.subs = Subs(cfg["max_subs"], width)
        self.sess = [Session(i, cfg["queue_depth"], cfg["max_inflight"]) for i in range(ns)]
        self.refusers = [Conn(nc + i, 16, 0, 0) for i in range(cfg["pending"])]
        self.ret = [-1] * cfg["retained"]   # pool slot per retained topic
        self.nret = 0
        # Routing scratch, one entry per session: best QoS, retain-as-published,
        # subscription ids. Reset as each message is delivered.
        self.h_qos = bytearray(b"\xff" * ns)
        self.h_rap = bytearray(ns)
        self.h_nsid = bytearray(ns)
        self.h_sid = [0] * (ns * _NSID)
        self.hits = bytearray(ns)
        self.mark = bytearray(cfg["max_subs"])
        self.seq = 0
        self.pkt = Packet()
        # The message being routed: topic, properties and payload regions.
        self.m_tb = self.m_pb = self.m_yb = None
        self.m_to = self.m_tn = self.m_po = self.m_pe = self.m_yo = self.m_yn = 0
        self.m_plen = 0
        self.m_qos = 0
        self.m_ret = False
        self.m_exp = -1
        self.m_slot = -1
        self.m_from = -1
        self.m_hits = 0
        self.m_full = False  # the message pool or retained table had no room
        self.dropped = 0
        self.received = 0
        self.sent = 0
        self.secs = 0
        self.auto = 0
        gc.collect()
        self.tables_bytes = free0 - gc.mem_free()
        self.ls = None
        self.p = select.poll()
        self.t_sec = self.t_chk = time.ticks_ms()
        self.sys_next = cfg["sys_interval"]
        self.wills = []
        self.slow_ms = cfg["slow_timeout"] * 1000
        self.filling = False
        self.bridge = None  # broker_bridge.Bridges when configured
        self.store = Persist(self) if cfg["persist_file"] else None  # broker_persist
        if cfg["bridge"]:
            self.bridge = broker_bridge.Bridges(self, cfg["bridge"])

    # ---- sockets -------------------------------------------------------------

    def _listener(self, host, port):
        # A non-blocking listening socket in the poller (TCP, and broker_ws's).
        ai = socket.getaddrinfo(host, port)[0]
        s = socket.socket(ai[0], socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(ai[-1])
        s.listen(8)
        s.setblocking(False)
        self.p.register(s, _PIN)
        return s

    def listen(self, host="0.0.0.0", port=1883):
        self.ls = self._listener(host, port)
        self.log.info("listening on %s:%d (tables %d bytes)" % (host, port, self.tables_bytes))
        if self.cfg["ws_port"]:
            gc.collect()
            from . import broker_ws  # only when configured: the heap is tight
            self.ws = broker_ws
            broker_ws.listen(self, host)

    def serve_forever(self):
        while True:
            self.poll(1000)

    async def serve(self):
        # Beside other asyncio tasks: poll without blocking, then yield.
        import asyncio
        while True:
            busy = self.poll(0)
            await asyncio.sleep_ms(0 if busy else 5)

    run = serve

    def publish(self, topic, payload, qos=0, retain=False):
        # A message from the program hosting the broker (a sensor loop on the
        # same board): routed like a client's, with no publisher session.
        # Allocates (str/bytes conversion); not for the hot path.
        if isinstance(topic, str):
            topic = topic.encode()
        if isinstance(payload, str):
            payload = payload.encode()
        self._inject(topic, b"", 0, payload, qos, retain, -1)

    def close(self):
        for c in self.conns:
            if c.state != FREE:
                self._drop(c, 0x8B, True)
        self._reap()
        if self.ls:
            self.p.unregister(self.ls)
            self.ls.close()
            self.ls = None
        if self.bridge is not None:
            self.bridge.close()
        if self.wls:
            self.ws.close(self)
        if self.store:
            self.store.save()

    def poll(self, timeout_ms=0):
        # One pass of the loop: handle ready sockets, then timers. Returns the
        # number of events handled.
        n = 0
        acc = False
        for o, ev in self.p.ipoll(timeout_ms):
            n += 1
            if o is self.ls:
                acc = True
                continue
            if o is self.wls:
                self.ws.accept(self)
                continue
            c = self._conn_of(o)
            if c is None:
                continue
            if c.state == REFUSE:
                self._refuse_read(c, ev)
                continue
            if ev & _POUT:
                self._flush(c)
            if ev & _PIN:
                self._read(c)
            elif ev & _PERRS:
                self._drop(c, None, True, "connection error")
        if acc:
            self._accept()
        self._reap()
        if self.wills:
            self._run_wills()
        if self.bridge is not None:
            self.bridge.step()  # upstream links: before the flush below sends what they routed
        for c in self.conns:
            if c.state == ONLINE:
                if c.txt > c.txh:
                    self._flush(c)  # what routing wrote this pass
                # Packets that waited for tx room (back-pressure).
                if c.stalled and c.txt - c.txh < len(c.tx) // 2:
                    self._process(c)
        now = time.ticks_ms()
        if time.ticks_diff(now, self.t_chk) >= 200:
            self.t_chk = now
            self._timers(now)
        return n

    def _conn_of(self, o):
        for c in self.conns:
            if c.sock is o:
                return c
        for c in self.refusers:
            if c.sock is o:
                return c
        return None

    def _accept(self):
        try:
            s, addr = self.ls.accept()
        except OSError:
            return
        s.setblocking(False)
        if self._take(s, addr):
            return
        # Full: answer with a CONNACK once the CONNECT shows the version.
        for c in self.refusers:
            if c.state == FREE:
                c.sock = s
                c.state = REFUSE
                c.rxn = 0
                c.last = time.ticks_ms()
                c.addr = _addr(addr)
                self.p.register(s, _PIN)
                self.log.warn("connection from %s past max_clients %d: refusing" % (c.addr, len(self.conns)))
                return
        self.log.warn("connection from %s past max_clients and pending slots: closed" % _addr(addr))
        s.close()

    def _take(self, s, addr, wrap=None):
        # A free connection slot for accepted socket s, read and written
        # through s itself or through wrap(c, s) (broker_ws's framing); None
        # when max_clients are online.
        for c in self.conns:
            if c.state == FREE:
                sock = wrap(c, s) if wrap else s
                c.sock = sock
                c.state = PENDING
                c.addr = _addr(addr)
                c.last = time.ticks_ms()
                c.mask = _PIN
                self.p.register(sock, _PIN)
                self.log.debug("accepted %s" % c.addr)
                return c
        return None


def _addr(a):
    try:
        return "%s:%d" % (socket.inet_ntop(socket.AF_INET, a[4:8]), a[2] << 8 | a[3])
    except Exception:
        return str(a)


def main(argv=None):
    import sys
    host, port, cfg = CFG.parse_args(sys.argv[1:] if argv is None else argv)
    b = Broker(cfg)
    b.listen(host, port)
    try:
        b.serve_forever()
    except KeyboardInterrupt:
        b.close()


if __name__ == "__main__":
    main()
