# Keepalive, dead-link detection, persistent sessions with resend, exactly-once
# QoS 2 across link cuts and over slow links (a proxy in the test), and robust
# reconnect with the offline ring after mosquitto is killed and restarted on
# the same port.
import threading
import time

import pytest

from test_client_helpers import (run_mpy, start_mpy, finish, results, Collector, paho,
                                 mosquitto_factory, mosq, proxy_factory)  # noqa: F401

VERSIONS = [4, 5]


def persistent(v):
    # Keyword text for a session the broker keeps across reconnects.
    return "session_expiry=300" if v == 5 else ""


def clean(v):
    return "True" if v == 5 else "False"


@pytest.mark.parametrize("v", VERSIONS)
def test_keepalive_pings_keep_idle_link_up(mosq, proxy_factory, v):
    px = proxy_factory(mosq.port)
    out = run_mpy("""
import time
from umqtt_full import MQTTClient
got = []
c = MQTTClient("ka", "127.0.0.1", %(port)d, keepalive=2, version=%(v)d)
c.set_callback(lambda t, m: got.append(m))
c.connect()
c.subscribe(b"ka/x", 1)
t0 = time.ticks_ms()
sock = c.sock
while time.ticks_diff(time.ticks_ms(), t0) < 7000:   # 3.5 keepalives idle, polling
    c.check_msg()
    time.sleep_ms(50)
c.publish(b"ka/x", b"alive", qos=1)
c.wait_msg(3)
print("R same", c.sock is sock)
print("R got", got)
c.disconnect()
""" % dict(v=v, port=px.port))
    r = results(out)
    assert r == {"same": "True", "got": "[b'alive']"}


@pytest.mark.parametrize("v", VERSIONS)
def test_silent_broker_declares_link_dead(mosq, proxy_factory, v):
    px = proxy_factory(mosq.port)
    p = start_mpy("""
import time
from umqtt_full import MQTTClient
c = MQTTClient("dead", "127.0.0.1", %(port)d, keepalive=2, version=%(v)d)
c.connect()
print("READY")
t0 = time.ticks_ms()
try:
    while True:
        c.wait_msg()
except OSError as e:
    print("R err", e.args[0])
print("R secs", time.ticks_diff(time.ticks_ms(), t0) // 1000)
print("R sock", c.sock)
""" % dict(v=v, port=px.port))
    assert p.stdout.readline().strip() == "READY"
    px.stalled = True  # the broker goes silent; TCP stays open
    r = results(finish(p, 30))
    px.stalled = False
    assert r["err"] == "110"
    assert int(r["secs"]) <= 4  # ping at 1 s, dead 1.5 s later
    assert r["sock"] == "None"


def test_wait_msg_timeout_returns(mosq):
    out = run_mpy("""
import time
from umqtt_full import MQTTClient
c = MQTTClient("wt", "127.0.0.1", %(port)d)
c.connect()
t0 = time.ticks_ms()
print("R r", c.wait_msg(0.5), c.check_msg())
print("R ms", time.ticks_diff(time.ticks_ms(), t0) < 1500)
""" % dict(port=mosq.port))
    assert results(out) == {"r": "None None", "ms": "True"}


@pytest.mark.parametrize("v", VERSIONS)
def test_session_resend_qos1_qos2_across_cuts(mosq, proxy_factory, v):
    # The MicroPython side publishes 300 QoS 1/2 messages pipelined through a
    # proxy that cuts the link three times; the paho subscriber must see every
    # message, QoS 2 ones exactly once.
    px = proxy_factory(mosq.port)
    col = Collector(mosq.port, "rs/#", qos=2, version=v)
    p = start_mpy("""
import time
from umqtt_full import MQTTClient
c = MQTTClient("rs%(v)d", "127.0.0.1", %(port)d, keepalive=5, version=%(v)d, reconnect=True,
               backoff_min=0.05, backoff_max=0.3, inflight=8, offline_buffer=4096, %(pers)s)
c.connect(clean_session=%(clean)s)
print("READY")
for i in range(300):
    c.publish(b"rs/q%%d" %% (1 + i %% 2), b"%%d" %% i, qos=1 + i %% 2, wait=False)
    c.check_msg()
    time.sleep_ms(5)
while c.inflight() or c.queued():
    c.wait_msg(0.2)
print("R done", c.inflight(), c.queued())
c.disconnect()
""" % dict(v=v, port=px.port, pers=persistent(v), clean=clean(v)))
    assert p.stdout.readline().strip() == "READY"
    for k in range(3):
        time.sleep(0.4)
        px.cut()
    out = finish(p, 60)
    msgs = col.wait(300, 10)
    col.close()
    assert results(out)["done"] == "0 0"
    q1 = [int(m[1]) for m in msgs if m[0] == "rs/q1"]
    q2 = [int(m[1]) for m in msgs if m[0] == "rs/q2"]
    assert set(q1) == set(range(0, 300, 2))  # at least once
    assert sorted(q2) == list(range(1, 300, 2))  # exactly once


@pytest.mark.parametrize("v", VERSIONS)
def test_qos2_inbound_exactly_once_across_cuts(mosq, proxy_factory, v):
    px = proxy_factory(mosq.port)
    p = start_mpy("""
import time
from umqtt_full import MQTTClient
got = []
c = MQTTClient("in2_%(v)d", "127.0.0.1", %(port)d, keepalive=5, version=%(v)d, reconnect=True,
               backoff_min=0.05, backoff_max=0.3, %(pers)s)
c.set_callback(lambda t, m: got.append(int(m)))
c.connect(clean_session=%(clean)s)
c.subscribe(b"in2/x", 2)
print("READY")
t0 = time.ticks_ms()
while len(got) < 300 and time.ticks_diff(time.ticks_ms(), t0) < 40000:
    c.wait_msg(0.5)
c.wait_msg(1)  # a late duplicate would show here
print("R n", len(got), len(set(got)))
print("R ok", sorted(got) == list(range(300)))
c.disconnect()
""" % dict(v=v, port=px.port, pers=persistent(v), clean=clean(v)))
    assert p.stdout.readline().strip() == "READY"
    pc = paho(mosq.port, version=v)
    pc.connect("127.0.0.1", mosq.port)
    pc.loop_start()
    infos = []
    for i in range(300):
        infos.append(pc.publish("in2/x", b"%d" % i, qos=2))
        if i % 75 == 74:
            px.cut()
        time.sleep(0.005)
    for i in infos:
        i.wait_for_publish(10)
    out = finish(p, 60)
    pc.loop_stop()
    pc.disconnect()
    assert results(out) == {"n": "300 300", "ok": "True"}


@pytest.mark.parametrize("v", VERSIONS)
def test_robust_survives_broker_kill_and_restart(mosq, v):
    # mosquitto (no persistence) is killed and restarted on the same port; the
    # client reconnects with backoff, restores its subscription, resends what
    # was in flight and flushes the offline ring: every QoS 1 message it
    # published comes back to it.
    p = start_mpy("""
import time
from umqtt_full import MQTTClient
got = set()
c = MQTTClient("rk%(v)d", "127.0.0.1", %(port)d, keepalive=4, version=%(v)d, reconnect=True,
               backoff_min=0.1, backoff_max=1, offline_buffer=4096, timeout=2)
c.set_callback(lambda t, m: got.add(int(m)))
c.connect()
c.subscribe(b"rk/x", 1)
print("READY")
for i in range(120):
    c.publish(b"rk/x", b"%%d" %% i, qos=1)
    c.check_msg()
    time.sleep_ms(25)
t0 = time.ticks_ms()
while len(got) < 120 and time.ticks_diff(time.ticks_ms(), t0) < 20000:
    c.wait_msg(0.5)
print("R missing", sorted(set(range(120)) - got))
print("R queued", c.queued())
c.disconnect()
""" % dict(v=v, port=mosq.port))
    assert p.stdout.readline().strip() == "READY"
    time.sleep(0.8)
    mosq.kill()
    time.sleep(1.5)
    mosq.start()
    out = finish(p, 60)
    assert results(out) == {"missing": "[]", "queued": "0"}


def test_offline_ring_drop_oldest_when_full(mosq):
    # Broker down: publishes go to a 200-byte ring; when it is full the oldest
    # entries are dropped (default policy), the rest are sent after reconnect
    # (after the subscription is restored, so the client gets them back).
    p = start_mpy("""
import time
from umqtt_full import MQTTClient
got = []
c = MQTTClient("ring", "127.0.0.1", %d, reconnect=True, backoff_min=0.2, backoff_max=0.5,
               offline_buffer=200, timeout=2)
c.set_callback(lambda t, m: got.append(m))
c.connect()
c.subscribe(b"ring/#", 1)
print("READY")
while c.check_msg() is not None or c.is_connected():
    time.sleep_ms(50)        # until the broker goes away
for i in range(20):
    c.publish(b"ring/x", b"%%02d" %% i, qos=1)   # 2 + 14-byte PUBLISH each: 12 fit
print("R queued", c.queued(), c._ring.dropped)
t0 = time.ticks_ms()
while len(got) < 12 and time.ticks_diff(time.ticks_ms(), t0) < 20000:
    c.check_msg()
    time.sleep_ms(20)
c.flush()
print("R left", c.queued(), c.inflight())
print("R got", got)
""" % mosq.port)
    assert p.stdout.readline().strip() == "READY"
    time.sleep(0.3)
    mosq.kill()
    r = results(p.stdout.readline())
    time.sleep(0.5)
    mosq.start()
    out = finish(p, 40)
    assert r["queued"] == "12 8"
    assert results(out)["left"] == "0 0"
    assert results(out)["got"] == str([b"%02d" % i for i in range(8, 20)])


def test_reconnect_tries_bounded(mosq):
    mosq.kill()
    out = run_mpy("""
import time
from umqtt_full import MQTTClient
c = MQTTClient("rt", "127.0.0.1", %d, reconnect=True, backoff_min=0.05, backoff_max=0.1,
               reconnect_tries=3, timeout=1)
c._user_down = False          # as if connected once and then lost
t0 = time.ticks_ms()
try:
    c.wait_msg()
except OSError as e:
    print("R err", e.args[0])
print("R fast", time.ticks_diff(time.ticks_ms(), t0) < 3000)
""" % mosq.port)
    assert results(out) == {"err": "107", "fast": "True"}


@pytest.mark.parametrize("v", VERSIONS)
def test_slow_link_qos1_qos2(mosq, proxy_factory, v):
    # Our client publishing and our client subscribing, each through its own
    # slow link to mosquitto: 50 ms added each way and 6 KB/s each way, so
    # every 300-byte PUBLISH arrives in 120-byte pieces; the publisher
    # pipelines one every 60 ms (~85% of the link). Halfway, the publisher's
    # downlink gets 1.5 s: its PUBLISHes still reach mosquitto, but the
    # PUBACKs/PUBRECs come later than its 1 s ack timeout, so its window of
    # 8 fills, it declares the link dead and its reconnects time out (the
    # CONNACK is late too); and the subscriber's link gets 1.5 s each way.
    # After at least 2 s, once the publisher has tried a new connection, the
    # subscriber's slow link breaks (cut) with PUBRECs of QoS 2 messages it
    # has delivered still on their way (its keepalive alone does not always
    # end it: PINGRESPs to earlier pings keep arriving), and the delays drop
    # back. Both resume their persistent sessions: the publisher resends
    # what is in flight with DUP (or as PUBREL); mosquitto resends to the
    # subscriber QoS 2 messages it has delivered, which it must recognise by
    # packet id and not deliver again. The subscriber must get every QoS 1
    # message at least once and every QoS 2 message exactly once.
    pa = proxy_factory(mosq.port)
    pb = proxy_factory(mosq.port)
    for px in (pa, pb):
        px.delay, px.rate = 0.05, 6000
    n = 40
    common = ("version=%d, reconnect=True, backoff_min=0.05, backoff_max=0.3, timeout=1, %s"
              % (v, persistent(v)))
    sub = start_mpy("""
import time
from umqtt_full import MQTTClient
got = []
c = MQTTClient("slsub%(v)d", "127.0.0.1", %(port)d, keepalive=1, %(common)s)
c.set_callback(lambda t, m: got.append((t, m[:3])))
c.connect(clean_session=%(clean)s)
c.subscribe(b"sl/#", 2)
print("READY")
sock = c.sock
links = 1
t0 = time.ticks_ms()
while len(set(got)) < %(n)d and time.ticks_diff(time.ticks_ms(), t0) < 13000:
    c.wait_msg(0.2)
    if c.sock is not None and c.sock is not sock:
        sock = c.sock
        links += 1
c.wait_msg(1)  # a late duplicate would show here
print("R links", links)
print("R q1", sorted(int(m) for t, m in got if t == b"sl/q1"))
print("R q2", sorted(int(m) for t, m in got if t == b"sl/q2"))
c.disconnect()
""" % dict(v=v, port=pb.port, common=common, clean=clean(v), n=n))
    assert sub.stdout.readline().strip() == "READY"
    pub = start_mpy("""
import time
from umqtt_full import MQTTClient
c = MQTTClient("slpub%(v)d", "127.0.0.1", %(port)d, keepalive=5, inflight=8, offline_buffer=8192,
               %(common)s)
t0 = time.ticks_ms()
c.connect(clean_session=%(clean)s)
print("R connect_ms", time.ticks_diff(time.ticks_ms(), t0))
sock = c.sock
links = 1
def count():
    global sock, links
    if c.sock is not None and c.sock is not sock:
        sock = c.sock
        links += 1
t0 = time.ticks_ms()
for i in range(%(n)d):
    c.publish(b"sl/q%%d" %% (1 + i %% 2), b"%%03d" %% i + b"." * 297, qos=1 + i %% 2, wait=False)
    c.check_msg()
    count()
    if i == %(n)d // 2:
        print("HALF")        # the test slows the downlink now
    time.sleep_ms(60)
while c.inflight() or c.queued():
    c.wait_msg(0.2)
    count()
print("R done", c.inflight(), c.queued())
print("R links", links)
print("R ms", time.ticks_diff(time.ticks_ms(), t0))
c.disconnect()
""" % dict(v=v, port=pa.port, common=common, clean=clean(v), n=n),
        # The client compiled from source plus an 8 KB offline ring: on this
        # 64-bit port 128K no longer has an 8 KB hole after the compile; the
        # word-adjusted heap holds what a 32-bit board's 128 KB holds.
        heap="128wK")
    rp = results(pub.stdout.readline())
    assert pub.stdout.readline().strip() == "HALF"
    t0 = time.monotonic()
    pa.delay_down = 1.5               # acks (and CONNACKs) later than the 1 s timeout
    pb.delay = 1.5
    while (pa.accepted < 2 or time.monotonic() - t0 < 2) and time.monotonic() - t0 < 8:
        time.sleep(0.05)
    slow = time.monotonic() - t0
    held = pb.up_held()
    pb.cut()
    pa.delay_down = None
    pb.delay = 0.05
    assert pa.accepted >= 2, "the publisher tried no new connection in 8 s of late acks"
    rp.update(results(finish(pub, 30)))
    rs = results(finish(sub, 30))
    print("slow link v%d: CONNECT..CONNACK %s ms; 1.5 s delays for %.1f s, then the subscriber's "
          "link cut with %d bytes on their way up; publisher done in %s ms on %s links (%d tried, "
          "%d/%d bytes up/down), subscriber on %s links (%d tried)"
          % (v, rp["connect_ms"], slow, held, rp["ms"], rp["links"], pa.accepted, pa.up_total,
             pa.down_total, rs["links"], pb.accepted))
    assert rp["done"] == "0 0"
    assert int(rp["links"]) > 1 and int(rs["links"]) > 1, "a client did not reconnect"
    assert int(rp["connect_ms"]) >= 100, "the link was not slow"   # 50 ms each way
    q1 = [int(x) for x in rs["q1"].strip("[]").split(",") if x.strip()]
    q2 = [int(x) for x in rs["q2"].strip("[]").split(",") if x.strip()]
    assert set(q1) == set(range(0, n, 2))            # QoS 1: at least once
    assert q2 == list(range(1, n, 2))                # QoS 2: exactly once
