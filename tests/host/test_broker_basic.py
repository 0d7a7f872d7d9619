# The broker (Unix port, 128 KB heap) against paho-mqtt 3.1.1/5.0,
# mosquitto_pub/sub and hand-written packets: routing, wildcards, QoS,
# retained messages, wills, keepalive, takeover, persistent sessions.
import subprocess
import time

from test_broker_helpers import (broker_factory, Raw, Paho, connect, subscribe, publish,  # noqa: F401
                                 unsubscribe, ack, publish_fields)


def test_module_runs_and_mosquitto_tools(broker_factory):
    b = broker_factory()
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(b.port), "-t", "tools/#",
                            "-v", "-C", "2", "-W", "10", "-q", "1"], stdout=subprocess.PIPE, text=True)
    b.wait_log("subscribed")
    for qos, msg in ((0, "zero"), (1, "one")):
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(b.port), "-t", "tools/x",
                        "-m", msg, "-q", str(qos)], check=True, timeout=10)
    out, _ = sub.communicate(timeout=15)
    assert out.split("\n")[:2] == ["tools/x zero", "tools/x one"]
    # v5 tools too
    subprocess.run(["mosquitto_pub", "-V", "mqttv5", "-h", "127.0.0.1", "-p", str(b.port), "-t",
                    "tools/r", "-m", "kept", "-r", "-q", "2"], check=True, timeout=10)
    out = subprocess.run(["mosquitto_sub", "-V", "mqttv5", "-h", "127.0.0.1", "-p", str(b.port),
                          "-t", "tools/#", "-q", "2", "-C", "1", "-W", "5", "-F", "%r %q %t %p"],
                         capture_output=True, text=True, timeout=10).stdout
    assert out.strip() == "1 2 tools/r kept"


def test_v4_v5_mixed_wildcards_dollar_and_downgrade(broker_factory):
    b = broker_factory()
    s4 = Paho(b.port, "s4", version=4)
    s5 = Paho(b.port, "s5", version=5)
    assert s4.sub("a/+/c", 1) == [1]
    assert s4.sub("#", 0) == [0]       # overlapping with a/+/c: one copy at QoS 1
    assert s5.sub("a/#", 2) == [2]
    assert s5.sub("$SYS/#", 0) == [0]
    p = Paho(b.port, "p5", version=5)
    p.pub("a/b/c", b"m2", qos=2)
    p.pub("x/y", b"m0", qos=0)
    p.pub("$private/t", b"nope", qos=0)   # '#' and 'a/#' must not match a '$' topic
    m4 = s4.wait(2)
    m5 = s5.wait(1)
    time.sleep(0.3)
    got4 = sorted((m.topic, m.payload, m.qos) for m in s4.msgs)
    assert got4 == [("a/b/c", b"m2", 1), ("x/y", b"m0", 0)], got4
    assert [(m.topic, m.payload, m.qos) for m in s5.msgs] == [("a/b/c", b"m2", 2)]
    assert not any(m.topic.startswith("$") for m in m4 + m5)
    for c in (s4, s5, p):
        c.stop()


def test_raw_qos1_qos2_flows_exactly_once(broker_factory):
    b = broker_factory()
    sub = Raw(b.port)
    sub.connect("rs")
    sub.send(subscribe(1, [("q/#", 2)]))
    assert sub.read() == (0x90, b"\x00\x01\x02")
    pub = Raw(b.port)
    pub.connect("rp")
    pub.send(publish("q/1", b"one", qos=1, pid=7))
    assert pub.read() == (0x40, b"\x00\x07")
    first, body = sub.read()
    assert first == 0x32
    t, pid1, _, pay = publish_fields(body, 1)
    assert (t, pay) == (b"q/1", b"one")
    sub.send(ack(4, pid1))
    # QoS 2, with the PUBLISH sent twice (DUP) before PUBREL: delivered once.
    pub.send(publish("q/2", b"two", qos=2, pid=8))
    assert pub.read() == (0x50, b"\x00\x08")
    pub.send(publish("q/2", b"two", qos=2, pid=8, dup=True))
    assert pub.read() == (0x50, b"\x00\x08")
    pub.send(ack(6, 8))
    assert pub.read() == (0x70, b"\x00\x08")
    first, body = sub.read()
    assert first == 0x34
    t, pid2, _, pay = publish_fields(body, 2)
    assert (t, pay) == (b"q/2", b"two")
    sub.send(ack(5, pid2))
    assert sub.read() == (0x62, bytes([pid2 >> 8, pid2 & 0xFF]))
    sub.send(ack(7, pid2))
    assert sub.nothing(0.5), "second copy of a QoS 2 message"
    # PINGREQ -> PINGRESP; UNSUBSCRIBE -> UNSUBACK, then nothing more arrives
    sub.send(b"\xc0\x00")
    assert sub.read() == (0xD0, b"")
    sub.send(unsubscribe(3, ["q/#"]))
    assert sub.read() == (0xB0, b"\x00\x03")
    pub.send(publish("q/3", b"x", qos=0))
    assert sub.nothing(0.4)
    sub.send(b"\xe0\x00")
    assert sub.closed()


def test_retained_delivered_on_subscribe_and_deleted(broker_factory):
    b = broker_factory()
    p = Paho(b.port, "rp", version=4)
    p.pub("ret/a", b"A", qos=1, retain=True)
    p.pub("ret/b", b"B", qos=0, retain=True)
    s = Paho(b.port, "rs", version=5)
    s.sub("ret/#", 1)
    got = s.wait(2)
    assert sorted((m.topic, m.payload, m.retain, m.qos) for m in got) == [
        ("ret/a", b"A", True, 1), ("ret/b", b"B", True, 0)]
    # live messages to an existing subscription: retain flag 0 (no retain-as-published)
    s.clear()
    p.pub("ret/a", b"A2", qos=0, retain=True)
    got = s.wait(1)
    assert (got[0].payload, got[0].retain) == (b"A2", False)
    p.pub("ret/b", b"", qos=1, retain=True)   # empty payload deletes
    time.sleep(0.2)
    s2 = Paho(b.port, "rs2", version=4)
    s2.sub("ret/#", 0)
    got = s2.wait(1)
    time.sleep(0.3)
    assert [(m.topic, m.payload) for m in s2.msgs] == [("ret/a", b"A2")]
    for c in (p, s, s2):
        c.stop()


def test_will_on_abrupt_close_not_on_disconnect(broker_factory):
    b = broker_factory()
    w = Paho(b.port, "watch", version=4)
    w.sub("will/#", 1)
    r = Raw(b.port)
    r.connect("dies", will=(b"will/dies", b"gone", 1, False))
    r.close()  # no DISCONNECT
    got = w.wait(1)
    assert [(m.topic, m.payload, m.qos) for m in got] == [("will/dies", b"gone", 1)]
    r = Raw(b.port)
    r.connect("clean", will=(b"will/clean", b"gone", 0, False))
    r.send(b"\xe0\x00")
    assert r.closed()
    time.sleep(0.4)
    assert [m.topic for m in w.msgs] == ["will/dies"]
    w.stop()


def test_keepalive_enforced_at_one_and_a_half(broker_factory):
    b = broker_factory()
    w = Paho(b.port, "watch", version=4)
    w.sub("ka/#", 0)
    r = Raw(b.port)
    r.connect("idle", keepalive=1, will=(b"ka/idle", b"timeout", 0, False))
    t0 = time.time()
    assert r.closed(4)
    dt = time.time() - t0
    assert 1.4 <= dt <= 2.4, dt
    assert [m.payload for m in w.wait(1)] == [b"timeout"]
    # a client that pings in time stays
    r = Raw(b.port)
    r.connect("pinger", keepalive=1)
    for _ in range(4):
        time.sleep(0.7)
        r.send(b"\xc0\x00")
        assert r.read() == (0xD0, b"")
    r.close()
    w.stop()


def test_takeover_and_persistent_session_queue(broker_factory):
    b = broker_factory()
    a = Raw(b.port)
    a.connect("same", clean=False)
    a.send(subscribe(1, [("pers/#", 1)]))
    assert a.read()[0] == 0x90
    a2 = Raw(b.port)
    body = a2.connect("same", clean=False)
    assert body[0] == 1   # session present
    assert a.closed(), "old connection not closed on takeover"
    a2.close()            # offline now: QoS 1 queued, QoS 0 not
    time.sleep(0.3)
    p = Paho(b.port, "pp", version=4)
    for i in range(3):
        p.pub("pers/t", b"q%d" % i, qos=1)
    p.pub("pers/t", b"zero", qos=0)
    time.sleep(0.3)
    a3 = Raw(b.port)
    assert a3.connect("same", clean=False)[0] == 1
    got = []
    for i in range(3):
        first, body = a3.read()
        assert first & 0xF0 == 0x30 and (first >> 1) & 3 == 1
        t, pid, _, pay = publish_fields(body, 1)
        got.append(pay)
        a3.send(ack(4, pid))
    assert got == [b"q0", b"q1", b"q2"]
    assert a3.nothing(0.4)
    # clean session discards it
    a3.close()
    time.sleep(0.2)
    a4 = Raw(b.port)
    assert a4.connect("same", clean=True)[0] == 0
    p.stop()


def test_zero_length_client_id(broker_factory):
    b = broker_factory()
    r = Raw(b.port)
    r.send(connect("", 4, clean=False))
    assert r.read() == (0x20, b"\x00\x02")   # identifier rejected
    assert r.closed()
    r = Raw(b.port)
    r.connect("", 4, clean=True)
    r5 = Raw(b.port)
    body = r5.connect("", 5)
    assert b"\x12\x00" in body and b"auto-" in body   # Assigned Client Identifier


def test_inflight_resent_with_dup_after_reconnect_and_v5_takeover(broker_factory):
    b = broker_factory()
    s = Raw(b.port)
    se = b"\x11\x00\x00\x00\x3c"
    s.connect("inf", 5, cprops=se)
    s.send(subscribe(1, [("inf/#", 2)], v=5))
    assert s.read()[0] == 0x90
    p = Raw(b.port)
    p.connect("infp", 4)
    p.send(publish("inf/1", b"q1", qos=1, pid=1))
    p.send(publish("inf/2", b"q2", qos=2, pid=2))
    assert p.read() == (0x40, b"\x00\x01")
    assert p.read() == (0x50, b"\x00\x02")
    p.send(ack(6, 2))
    assert p.read() == (0x70, b"\x00\x02")
    f1, b1 = s.read()
    f2, b2 = s.read()
    assert (f1, f2) == (0x32, 0x34)
    pid1 = publish_fields(b1, 1, 5)[1]
    pid2 = publish_fields(b2, 2, 5)[1]
    s.send(ack(5, pid2))            # PUBREC, then the link breaks before PUBREL arrives
    assert s.read() == (0x62, bytes([pid2 >> 8, pid2 & 0xFF]))
    # takeover by a v5 connection: the old one gets DISCONNECT 0x8E
    s2 = Raw(b.port)
    assert s2.connect("inf", 5, clean=False, cprops=se)[0] == 1
    assert s.read() == (0xE0, b"\x8e")
    assert s.closed()
    # resent: the QoS 1 PUBLISH with DUP, the PUBREL again
    got = {}
    for _ in range(2):
        first, body = s2.read()
        got[first] = body
    assert 0x3A in got and publish_fields(got[0x3A], 1, 5)[1] == pid1
    assert got[0x62] == bytes([pid2 >> 8, pid2 & 0xFF])
    s2.send(ack(4, pid1))
    s2.send(ack(7, pid2))
    assert s2.nothing(0.4)
