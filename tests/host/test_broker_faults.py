# Faults between real peers and our broker (Unix port): a TCP proxy that
# cuts links mid-flow (the proxy of test_client_helpers) or slows them
# (latency and a byte rate each way), cuts at each step of the QoS 2
# handshake with hand-driven peers, and kill -9 of the broker with
# persistence on (QoS 1 and QoS 2). QoS 1: every acknowledged message arrives at least once;
# QoS 2: exactly once.
import random
import socket
import struct
import threading
import time

import pytest

from test_broker_helpers import broker_factory, Raw, publish, subscribe, ack  # noqa: F401
from test_client_helpers import Proxy
from test_broker_persist import PBroker, read_pub

# Queues long enough that no message is dropped by the full-queue policy
# while a subscriber is cut off (that policy is tested in test_broker_limits).
ROOMY = {"queue_depth": 20, "msg_slots": 28, "msg_size": 96}


class Cutter:
    """Cuts every connection through each proxy at its own period: at that
    moment, or (every other time) once a few more bytes went up the link, so
    cuts land inside packets too."""

    def __init__(self, proxies, periods):
        self.run = True
        self.cuts = 0
        self.threads = [threading.Thread(target=self._loop, args=(p, t), daemon=True)
                        for p, t in zip(proxies, periods)]
        for t in self.threads:
            t.start()

    def _loop(self, p, period):
        rnd = random.Random(period)
        k = 0
        while self.run:
            time.sleep(period)
            if self.run and p.conns:
                k += 1
                if k & 1:
                    p.cut()
                else:
                    p.up_bytes = 0
                    p.cut_after = rnd.randint(1, 12)
                self.cuts += 1

    def stop(self):
        self.run = False
        for t in self.threads:
            t.join(2)


class PahoPeer:
    """paho-mqtt 3.1.1, persistent session, quick reconnects; records the
    payloads it receives and the mids the broker acknowledged."""

    def __init__(self, port, cid, sub=None, qos=1):
        import paho.mqtt.client as mqtt
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid,
                             protocol=mqtt.MQTTv311, clean_session=False)
        self.c.reconnect_delay_set(0.05, 0.2)
        self.got = []
        self.acked = set()
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.c.on_message = self._msg
        self.c.on_publish = self._pub
        self.c.on_subscribe = lambda *a: self.ready.set()
        if sub is None:
            self.c.on_connect = lambda *a: self.ready.set()
        self.c.connect("127.0.0.1", port, 30)
        self.c.loop_start()
        if sub is not None:
            self.c.subscribe(sub, qos)
        assert self.ready.wait(10), "paho connect/subscribe"

    def _msg(self, c, u, m):
        with self.lock:
            self.got.append(m.payload)

    def _pub(self, c, u, mid, rc, props):
        with self.lock:
            self.acked.add(mid)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def _synced(r):
    """PINGREQ/PINGRESP: the broker has handled everything sent before
    (packets in between, such as a PUBCOMP, are read and ignored)."""
    r.send(b"\xc0\x00")
    while r.read()[0] != 0xD0:
        pass


def _wait(cond, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out: " + what)


@pytest.mark.parametrize("qos", [1, 2])
def test_paho_through_cutting_proxies(broker_factory, qos):
    # Publisher and subscriber each behind a proxy that cuts every link
    # every ~0.2 s; paho reconnects with its session each time.
    b = broker_factory(ROOMY)
    pa, pb = Proxy(b.port), Proxy(b.port)
    sub = PahoPeer(pb.port, "fsub", "cut/#", qos)
    pub = PahoPeer(pa.port, "fpub")
    cutter = Cutter([pa, pb], [0.17, 0.23])
    n = 40
    sent = {}
    try:
        for i in range(n):
            info = pub.c.publish("cut/%d" % (i % 3), b"m%03d" % i, qos)
            sent[info.mid] = b"m%03d" % i
            time.sleep(0.03)
        _wait(lambda: set(sent) <= pub.acked, 30, "all publishes acknowledged")
        want = set(sent.values())
        _wait(lambda: want <= set(sub.got), 30, "all messages at the subscriber")
        time.sleep(0.5)                       # let any late duplicate arrive
    finally:
        cutter.stop()
        pub.close()
        sub.close()
        pa.close()
        pb.close()
    resumed = b.log().count("(session resumed)")
    print("cuts %d, resumed sessions %d, %d deliveries of %d messages" % (
        cutter.cuts, resumed, len(sub.got), n))
    assert cutter.cuts >= 5 and resumed >= 5, "the proxies did not cut mid-flow"
    assert set(sub.got) == want
    if qos == 2:
        dups = sorted(m for m in want if sub.got.count(m) != 1)
        assert not dups, "QoS 2 delivered more than once: %r" % dups


# ---- slow links ---------------------------------------------------------------------

def test_proxy_slow_mode_delays_and_throttles():
    # The proxy's slow mode itself (so the slow-link tests below cannot pass
    # on a link that is not slow): an echo server behind a proxy adding
    # 0.1 s each way and 10 KB/s each way.
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    pieces = []

    def echo():
        c, _ = ls.accept()
        with c:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                pieces.append(len(d))
                c.sendall(d)

    threading.Thread(target=echo, daemon=True).start()
    px = Proxy(ls.getsockname()[1], delay=0.1, rate=10000)
    try:
        s = socket.create_connection(("127.0.0.1", px.port), 10)
        t0 = time.monotonic()
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        rtt = time.monotonic() - t0
        data = bytes(random.Random(1).getrandbits(8) for _ in range(10000))
        t0 = time.monotonic()
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            d = s.recv(65536)
            assert d
            got += d
        bulk = time.monotonic() - t0
        s.close()
    finally:
        px.close()
        ls.close()
    print("slow proxy: round trip %.3f s, 10000 bytes echoed in %.2f s, read in %d pieces of at "
          "most %d bytes" % (rtt, bulk, len(pieces) - 1, max(pieces)))
    assert got == data and px.up_total == px.down_total == 10001
    assert rtt >= 0.2                          # 0.1 s each way
    assert bulk >= 1.0 + 0.2 - 0.05            # 10 KB at 10 KB/s (pipelined both ways) + latency
    assert len(pieces) >= 10   # 200-byte pieces 20 ms apart (unthrottled: a few 4 KB reads)


@pytest.mark.parametrize("qos", [1, 2])
def test_paho_through_slow_links(broker_factory, qos):
    # paho publisher and subscriber (persistent sessions) each behind a slow
    # link to our broker: 50 ms each way, 6 KB/s each way, so each 300-byte
    # PUBLISH reaches the broker (and the subscriber) in 120-byte pieces and
    # the publisher's messages queue up in the link. Halfway, both links are
    # cut once while bytes are in flight; paho reconnects to its session.
    # Pool slots of max_packet (512) bytes: these messages do not fit ROOMY's.
    # max_inflight 40 (= n): after a reconnect paho 2.x resends every
    # unfinished message at once, past its own limit of 20 (it resets its
    # in-flight count and does not count the resends), and a 3.1.1 client
    # cannot learn our Receive Maximum; with the default 8 the burst after
    # the cut overflows the inbound QoS 2 table and paho is disconnected
    # ("receive maximum exceeded") again and again before it gets through.
    b = broker_factory({"queue_depth": 20, "max_inflight": 40, "msg_slots": 60})
    pa = Proxy(b.port, delay=0.05, rate=6000)
    pb = Proxy(b.port, delay=0.05, rate=6000)
    sub = PahoPeer(pb.port, "slsub", "slow/#", qos)
    pub = PahoPeer(pa.port, "slpub")
    n = 40
    sent = {}
    t0 = time.monotonic()
    try:
        for i in range(n):
            info = pub.c.publish("slow/%d" % (i % 3), b"%03d" % i + b"." * 297, qos)
            sent[info.mid] = b"%03d" % i
            time.sleep(0.02)
            if i == n // 2:
                pa.cut()
                pb.cut()
        _wait(lambda: set(sent) <= pub.acked, 12, "all publishes acknowledged")
        want = set(sent.values())
        _wait(lambda: want <= {m[:3] for m in sub.got}, 12, "all messages at the subscriber")
        took = time.monotonic() - t0
        time.sleep(0.5)                       # let any late duplicate arrive
    finally:
        pub.close()
        sub.close()
        pa.close()
        pb.close()
    got = [m[:3] for m in sub.got]
    resumed = b.log().count("(session resumed)")
    print("slow links: %d messages in %.2f s, %d deliveries, %d/%d bytes up/down the publisher's "
          "link, sessions resumed %d" % (n, took, len(got), pa.up_total, pa.down_total, resumed))
    assert "dropped" not in b.log(), "the slow consumer policy dropped messages: queues too short"
    assert resumed >= 2, "the cut did not happen mid-flow"
    assert took >= n * 300 / 6000, "the link was not slow"
    assert all(m == p + b"." * 297 for m in sub.got for p in [m[:3]])
    assert set(got) == want                      # QoS 1: at least once
    if qos == 2:
        dups = sorted(m for m in want if got.count(m) != 1)
        assert not dups, "QoS 2 delivered more than once: %r" % dups


# ---- QoS 2 handshake cut at each step (hand-driven peers) ------------------------

def _sub_direct(b, v=4):
    s = Raw(b.port)
    s.connect("qsub", v)
    s.send(subscribe(1, [("x/#", 2)], v))
    assert s.read()[0] == 0x90
    return s


def _take(s, v=4):
    """Receive one QoS 2 message as a well-behaved receiver; its payload."""
    t, pay, q, pid, dup, ret, pr = read_pub(s, v=v)
    assert q == 2
    s.send(ack(5, pid))
    assert s.read() == (0x62, struct.pack(">H", pid))
    s.send(ack(7, pid))
    return pay


@pytest.mark.parametrize("v", [4, 5])
@pytest.mark.parametrize("cut", ["publish", "pubrec", "pubrel"])
def test_qos2_publisher_cut_at_each_step(broker_factory, cut, v):
    # The publisher's link is cut after its PUBLISH (PUBREC lost), after
    # the PUBREC, or after its PUBREL (PUBCOMP lost); it reconnects to its
    # session and carries on. The subscriber gets the message exactly once.
    b = broker_factory()
    s = _sub_direct(b)
    px = Proxy(b.port)
    kw = {"cprops": b"\x11\x00\x00\x00\x3c"} if v == 5 else {}
    p = Raw(px.port)
    p.connect("qpub", v, clean=False, **kw)
    p.send(publish("x/1", b"once", 2, 9, v=v))
    if cut == "publish":
        assert _take(s) == b"once"            # routed; the PUBREC is never read
        px.cut()
    else:
        assert p.read()[0] == 0x50
        if cut == "pubrel":
            p.send(ack(6, 9))
            _synced(p)                        # released; its PUBCOMP not taken
        px.cut()
        assert _take(s) == b"once"
    p = Raw(px.port)
    assert p.connect("qpub", v, clean=False, **kw)[0] == 1   # session present
    if cut == "publish":
        p.send(publish("x/1", b"once", 2, 9, v=v, dup=True))
        first, body = p.read()
        assert first == 0x50 and body[:2] == b"\x00\x09"     # PUBREC again, not routed
    p.send(ack(6, 9))
    first, body = p.read()
    assert first == 0x70 and body[:2] == b"\x00\x09"
    if cut == "pubrel" and v == 5:
        assert body == b"\x00\x09\x92"      # released already: packet id not found
    assert s.nothing(0.5), "QoS 2 message delivered twice"
    # The session goes on: a new message with a new id is routed.
    p.send(publish("x/2", b"next", 2, 10, v=v))
    assert p.read()[0] == 0x50
    p.send(ack(6, 10))
    assert p.read()[0] == 0x70
    assert _take(s) == b"next"
    px.close()


@pytest.mark.parametrize("cut", ["publish", "pubrec", "pubcomp"])
def test_qos2_subscriber_cut_at_each_step(broker_factory, cut):
    # The broker's side of the handshake: cut after its PUBLISH (our PUBREC
    # never sent), after our PUBREC (once its PUBREL came), after our
    # PUBCOMP. After a PUBREC the broker must never send the PUBLISH again.
    b = broker_factory()
    px = Proxy(b.port)
    s = Raw(px.port)
    s.connect("csub", 4, clean=False)
    s.send(subscribe(1, [("x/#", 2)]))
    assert s.read()[0] == 0x90
    p = Raw(b.port)
    p.connect("cpub", 4)
    p.send(publish("x/1", b"once", 2, 3))
    assert p.read()[0] == 0x50
    p.send(ack(6, 3))
    assert p.read()[0] == 0x70
    t, pay, q, pid, dup, ret, pr = read_pub(s)
    assert (pay, q, dup) == (b"once", 2, False)
    if cut != "publish":
        s.send(ack(5, pid))
        assert s.read() == (0x62, struct.pack(">H", pid))   # the broker has our PUBREC
        if cut == "pubcomp":
            s.send(ack(7, pid))
            _synced(s)
    px.cut()
    s = Raw(px.port)
    assert s.connect("csub", 4, clean=False)[0] == 1
    if cut == "publish":
        t, pay, q, pid2, dup, ret, pr = read_pub(s)
        assert (pay, q, dup, pid2) == (b"once", 2, True, pid)   # resent, DUP, same id
        s.send(ack(5, pid))
        assert s.read() == (0x62, struct.pack(">H", pid))
        s.send(ack(7, pid))
    elif cut == "pubrec":
        assert s.read() == (0x62, struct.pack(">H", pid))    # PUBREL, not the PUBLISH
        s.send(ack(7, pid))
    assert s.nothing(0.5)
    px.close()


# ---- kill -9 of the broker mid-flow ---------------------------------------------------

def test_kill9_mid_flow_loses_no_acknowledged_qos1(tmp_path):
    # persist_interval 0: a QoS 1 message is on file before its PUBACK, so
    # every message paho saw acknowledged reaches the subscriber after the
    # broker is killed (twice) and restarted on the same port.
    cfg = dict(ROOMY, persist_file=str(tmp_path / "state.bin"), persist_interval=0)
    b = PBroker(tmp_path, cfg)
    sub = pub = None
    try:
        sub = PahoPeer(b.port, "ksub", "k/#", 1)
        pub = PahoPeer(b.port, "kpub")
        sent = {}
        kills = 0
        for i in range(60):
            info = pub.c.publish("k/%d" % (i % 4), b"k%03d" % i, 1)
            sent[info.mid] = b"k%03d" % i
            time.sleep(0.02)
            if i in (20, 40):
                _wait(lambda: len(pub.acked) >= i - 5, 10, "acks before the kill")
                b.kill()                      # SIGKILL mid-flow
                kills += 1
                time.sleep(0.3)
                b.start()
        _wait(lambda: set(sent) <= pub.acked, 30, "all publishes acknowledged")
        acked = {sent[m] for m in pub.acked if m in sent}
        _wait(lambda: acked <= set(sub.got), 30, "acknowledged messages at the subscriber")
        assert kills == 2 and b.log().count("state loaded from") == 2
    finally:
        for c in (pub, sub):
            if c:
                c.close()
        alive = b.alive()
        b.kill()
        print("--- broker log ---\n" + b.log()[-6000:])
    assert alive
    print("%d acknowledged, %d deliveries, %d distinct" % (len(acked), len(sub.got), len(set(sub.got))))
    missing = sorted(acked - set(sub.got))
    assert not missing, "acknowledged but lost: %r" % missing


def test_kill9_mid_flow_qos2_exactly_once(tmp_path):
    # QoS 2 both ways (paho publisher and subscriber, persistent sessions),
    # persist_interval 0, the broker killed with SIGKILL three times and
    # started again on the same port: mid-flow (handshakes in every state
    # on both sides), and twice right after the subscriber had everything
    # (its last handshakes complete, before the once-a-second write). paho
    # resends what it had in flight; every message must reach the
    # subscriber exactly once: a stale in-flight entry on file would be
    # resent as a new PUBLISH after the subscriber had released its id.
    cfg = dict(ROOMY, persist_file=str(tmp_path / "state.bin"), persist_interval=0)
    b = PBroker(tmp_path, cfg)
    sub = pub = None
    n = 60
    kills = []
    try:
        sub = PahoPeer(b.port, "k2sub", "k2/#", 2)
        pub = PahoPeer(b.port, "k2pub")
        sent = {}
        for i in range(n):
            info = pub.c.publish("k2/%d" % (i % 4), b"q%03d" % i, 2)
            sent[info.mid] = b"q%03d" % i
            time.sleep(0.02)
            if i in (15, 35, 50):
                if i != 35:
                    # Quiet: everything so far delivered (the last PUBCOMP
                    # may still be on its way).
                    want = {b"q%03d" % k for k in range(i + 1)}
                    _wait(lambda: want <= set(sub.got), 10, "delivery before the kill")
                    time.sleep(0.05)
                b.kill()                      # SIGKILL
                kills.append(i)
                time.sleep(0.3)
                b.start()
        _wait(lambda: set(sent) <= pub.acked, 30, "all publishes acknowledged")
        want = set(sent.values())
        _wait(lambda: want <= set(sub.got), 30, "all messages at the subscriber")
        time.sleep(1.0)                       # a late duplicate would show here
        loaded = b.log().count("state loaded from")
    finally:
        for c in (pub, sub):
            if c:
                c.close()
        alive = b.alive()
        b.kill()
        print("--- broker log ---\n" + b.log()[-6000:])
    assert alive
    assert kills == [15, 35, 50] and loaded == 3
    print("%d messages, %d deliveries, %d distinct" % (n, len(sub.got), len(set(sub.got))))
    assert set(sub.got) == want
    dups = sorted(m for m in want if sub.got.count(m) != 1)
    assert not dups, "QoS 2 delivered more than once across kill -9: %r" % dups
