# MQTT 5 features of the broker, checked with hand-written packets (exact
# bytes) and paho-mqtt v5: CONNACK properties, session and message expiry,
# topic aliases both ways, Receive Maximum, Maximum Packet Size, subscription
# options and identifiers, shared subscriptions, properties passed through,
# will delay, server keepalive.
import struct
import time

from test_broker_helpers import (broker_factory, Raw, Paho, subscribe, publish,  # noqa: F401
                                 ack, publish_fields, varint)


def prop_dict(pr):
    """Hand decode of a property block (no user properties repeated)."""
    out = {}
    p = 0
    while p < len(pr):
        pid = pr[p]
        p += 1
        if pid in (0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A):
            out[pid] = pr[p]
            p += 1
        elif pid in (0x13, 0x21, 0x22, 0x23):
            out[pid] = struct.unpack(">H", pr[p:p + 2])[0]
            p += 2
        elif pid in (0x02, 0x11, 0x18, 0x27):
            out[pid] = struct.unpack(">I", pr[p:p + 4])[0]
            p += 4
        elif pid == 0x0B:
            v = 0
            s = 0
            while True:
                b = pr[p]
                p += 1
                v |= (b & 0x7F) << s
                s += 7
                if not b & 0x80:
                    break
            out.setdefault(pid, []).append(v)
        elif pid == 0x26:
            n = struct.unpack(">H", pr[p:p + 2])[0]
            k = pr[p + 2:p + 2 + n]
            p += 2 + n
            n = struct.unpack(">H", pr[p:p + 2])[0]
            out.setdefault(pid, []).append((k, pr[p + 2:p + 2 + n]))
            p += 2 + n
        else:
            n = struct.unpack(">H", pr[p:p + 2])[0]
            out[pid] = pr[p + 2:p + 2 + n]
            p += 2 + n
    return out


def connack_props(body):
    n = body[2]  # property length (small here)
    assert n < 128
    return prop_dict(body[3:3 + n])


def test_connack_properties_and_server_keepalive(broker_factory):
    b = broker_factory(max_keepalive=5)
    r = Raw(b.port)
    pr = connack_props(r.connect("c5", 5, keepalive=60))
    assert pr[0x21] == 8 and pr[0x27] == 512 and pr[0x22] == 4   # receive max, packet size, alias max
    assert pr[0x13] == 5                                          # server keepalive
    assert pr[0x2A] == 1 and pr[0x29] == 1 and pr[0x28] == 1
    # keepalive now 5 s: enforced at 7.5 s -- checked on a short one instead
    r.close()


def test_session_and_message_expiry(broker_factory):
    b = broker_factory()
    sub = Raw(b.port)
    sub.connect("se", 5, clean=True, cprops=b"\x11" + struct.pack(">I", 2))
    sub.send(subscribe(1, [("exp/#", 1)], v=5))
    assert sub.read() == (0x90, b"\x00\x01\x00\x01")
    sub.close()
    time.sleep(0.3)
    pub = Raw(b.port)
    pub.connect("pe", 5)
    pub.send(publish("exp/short", b"s", qos=1, pid=1, v=5, pprops=b"\x02\x00\x00\x00\x01"))
    assert pub.read()[0] == 0x40
    pub.send(publish("exp/long", b"l", qos=1, pid=2, v=5, pprops=b"\x02\x00\x00\x00\x3c"))
    assert pub.read()[0] == 0x40
    time.sleep(1.6)   # the 1 s message expires in the queue; session (2 s) still there
    sub = Raw(b.port)
    body = sub.connect("se", 5, clean=False, cprops=b"\x11" + struct.pack(">I", 2))
    assert body[0] == 1
    first, body = sub.read()
    t, pid, pr, pay = publish_fields(body, 1, 5)
    assert (t, pay) == (b"exp/long", b"l")
    assert 55 <= prop_dict(pr)[0x02] <= 60            # expiry counted down
    sub.send(ack(4, pid))
    assert sub.nothing(0.4)
    sub.close()
    time.sleep(3.5)   # now the session expires
    sub = Raw(b.port)
    assert sub.connect("se", 5, clean=False)[0] == 0


def test_topic_alias_in_and_out(broker_factory):
    b = broker_factory()
    sub = Raw(b.port)
    sub.connect("as", 5, cprops=b"\x22\x00\x02")   # accepts 2 aliases from the broker
    sub.send(subscribe(1, [("al/#", 0)], v=5))
    assert sub.read()[0] == 0x90
    v4 = Paho(b.port, "al4", version=4)
    v4.sub("al/#", 0)
    pub = Raw(b.port)
    pub.connect("ap", 5)
    pub.send(publish("al/topic", b"1", v=5, pprops=b"\x23\x00\x01"))   # sets alias 1
    pub.send(publish("", b"2", v=5, pprops=b"\x23\x00\x01"))           # uses it
    got = []
    for _ in range(2):
        first, body = sub.read()
        got.append(publish_fields(body, 0, 5))
    # out: first with the topic and alias 1, then the alias alone
    assert got[0][0] == b"al/topic" and prop_dict(got[0][2]) == {0x23: 1} and got[0][3] == b"1"
    assert got[1][0] == b"" and prop_dict(got[1][2]) == {0x23: 1} and got[1][3] == b"2"
    assert [(m.topic, m.payload) for m in v4.wait(2)] == [("al/topic", b"1"), ("al/topic", b"2")]
    # an alias over the maximum: DISCONNECT 0x94
    pub.send(publish("al/x", b"3", v=5, pprops=b"\x23\x00\x09"))
    assert pub.read() == (0xE0, b"\x94")
    assert pub.closed()
    # an unknown alias: protocol error
    p2 = Raw(b.port)
    p2.connect("ap2", 5)
    p2.send(publish("", b"4", v=5, pprops=b"\x23\x00\x02"))
    assert p2.read() == (0xE0, b"\x82")
    v4.stop()


def test_receive_maximum_and_maximum_packet_size(broker_factory):
    b = broker_factory()
    sub = Raw(b.port)
    sub.connect("rm", 5, cprops=b"\x21\x00\x01" + b"\x27\x00\x00\x00\x40")  # receive max 1, 64 bytes
    sub.send(subscribe(1, [("rm/#", 1)], v=5))
    assert sub.read()[0] == 0x90
    pub = Raw(b.port)
    pub.connect("rmp", 5)
    pub.send(publish("rm/big", b"x" * 100, qos=1, pid=1, v=5))   # over the client's 64 bytes
    for i in range(3):
        pub.send(publish("rm/t", b"%d" % i, qos=1, pid=10 + i, v=5))
    for i in range(4):
        assert pub.read()[0] == 0x40
    seen = []
    for i in range(3):
        first, body = sub.read()
        t, pid, pr, pay = publish_fields(body, 1, 5)
        seen.append(pay)
        assert sub.nothing(0.3), "more than Receive Maximum in flight"
        sub.send(ack(4, pid))
    assert seen == [b"0", b"1", b"2"]


def test_subscription_options_and_identifiers(broker_factory):
    b = broker_factory()
    c = Raw(b.port)
    c.connect("so", 5)
    c.send(publish("opt/r", b"R", retain=True, v=5))
    # no-local on opt/nl, retain-as-published on opt/#, sub id 7 for both filters
    c.send(subscribe(1, [("opt/nl", 0x04), ("opt/#", 0x08)], v=5, sprops=b"\x0b\x07"))
    assert c.read() == (0x90, b"\x00\x01\x00\x00\x00")
    first, body = c.read()                   # the retained message, retain flag set
    assert first == 0x31
    t, _, pr, pay = publish_fields(body, 0, 5)
    assert (t, pay, prop_dict(pr)) == (b"opt/r", b"R", {0x0B: [7]})
    c.send(publish("opt/nl", b"self", v=5))  # matches both: opt/# is not no-local
    first, body = c.read()
    t, _, pr, pay = publish_fields(body, 0, 5)
    assert (t, pay, prop_dict(pr)) == (b"opt/nl", b"self", {0x0B: [7]})
    c.send(publish("opt/r", b"R2", retain=True, v=5))   # retain-as-published
    first, body = c.read()
    assert first == 0x31
    # retain handling 2: no retained messages on subscribe; 1: only when new
    c.send(subscribe(2, [("opt/r", 0x20)], v=5))
    assert c.read()[0] == 0x90
    c.send(subscribe(3, [("opt/+", 0x10)], v=5))
    assert c.read()[0] == 0x90
    first, body = c.read()
    assert publish_fields(body, 0, 5)[3] == b"R2"
    c.send(subscribe(4, [("opt/+", 0x10)], v=5))   # exists already: nothing
    assert c.read()[0] == 0x90
    assert c.nothing(0.4)


def test_shared_subscription_round_robin(broker_factory):
    b = broker_factory()
    m1 = Paho(b.port, "m1", version=5)
    m2 = Paho(b.port, "m2", version=5)
    m3 = Paho(b.port, "m3", version=4)
    assert m1.sub("$share/g/sh/#", 1) == [1]
    assert m2.sub("$share/g/sh/#", 1) == [1]
    assert m3.sub("$share/h/sh/+", 0) == [0]   # another group gets its own copy
    p = Paho(b.port, "shp", version=5)
    for i in range(6):
        p.pub("sh/t", b"%d" % i, qos=1)
    m3.wait(6)
    time.sleep(0.3)
    a = [m.payload for m in m1.msgs]
    c = [m.payload for m in m2.msgs]
    assert len(a) == 3 and len(c) == 3 and sorted(a + c) == [b"%d" % i for i in range(6)]
    assert len(m3.msgs) == 6
    for x in (m1, m2, m3, p):
        x.stop()


def test_properties_passed_through_and_v5_to_v4(broker_factory):
    from paho.mqtt.properties import Properties
    from paho.mqtt.packettypes import PacketTypes
    b = broker_factory()
    s5 = Paho(b.port, "pp5", version=5)
    s5.sub("req/#", 1)
    s4 = Paho(b.port, "pp4", version=4)
    s4.sub("req/#", 1)
    p = Paho(b.port, "ppp", version=5)
    pr = Properties(PacketTypes.PUBLISH)
    pr.UserProperty = [("k1", "v1"), ("k2", "v2")]
    pr.ResponseTopic = "resp/here"
    pr.CorrelationData = b"\x01\x02corr"
    pr.ContentType = "text/plain"
    pr.PayloadFormatIndicator = 1
    p.pub("req/x", b"body", qos=1, properties=pr)
    m = s5.wait(1)[0]
    assert m.payload == b"body"
    q = m.properties
    assert q.UserProperty == [("k1", "v1"), ("k2", "v2")]
    assert q.ResponseTopic == "resp/here" and q.CorrelationData == b"\x01\x02corr"
    assert q.ContentType == "text/plain" and q.PayloadFormatIndicator == 1
    m4 = s4.wait(1)[0]
    assert (m4.topic, m4.payload, m4.qos) == ("req/x", b"body", 1)
    for x in (s5, s4, p):
        x.stop()


def test_will_delay(broker_factory):
    b = broker_factory()
    w = Paho(b.port, "wd-watch", version=4)
    w.sub("wd/#", 0)
    se = b"\x11\x00\x00\x00\x0a"   # session expiry 10 s
    r = Raw(b.port)
    r.connect("wd1", 5, cprops=se, will=(b"wd/1", b"late", 0, False), will_props=b"\x18\x00\x00\x00\x01")
    r.close()
    t0 = time.time()
    got = w.wait(1, timeout=4)
    assert [m.payload for m in got] == [b"late"]
    assert time.time() - t0 >= 0.8
    # reconnecting within the delay cancels the will
    r = Raw(b.port)
    r.connect("wd2", 5, cprops=se, will=(b"wd/2", b"never", 0, False), will_props=b"\x18\x00\x00\x00\x02")
    r.close()
    time.sleep(0.5)
    r = Raw(b.port)
    assert r.connect("wd2", 5, clean=False, cprops=se)[0] == 1
    time.sleep(2.5)
    assert [m.payload for m in w.msgs] == [b"late"]
    r.send(b"\xe0\x00")
    w.stop()


def test_reason_codes_no_subscribers_and_unsubscribe(broker_factory):
    from test_broker_helpers import pkt
    b = broker_factory()
    c = Raw(b.port)
    c.connect("rc", 5)
    c.send(publish("nobody/here", b"x", qos=1, pid=3, v=5))
    assert c.read() == (0x40, b"\x00\x03\x10")          # no matching subscribers
    c.send(publish("nobody/here", b"x", qos=2, pid=4, v=5))
    assert c.read() == (0x50, b"\x00\x04\x10")
    c.send(subscribe(5, [("rc/a", 1)], v=5))
    assert c.read() == (0x90, b"\x00\x05\x00\x01")
    c.send(pkt(0xA2, b"\x00\x06\x00" + b"\x00\x04rc/a" + b"\x00\x04rc/b"))
    assert c.read() == (0xB0, b"\x00\x06\x00\x00\x11")  # success, no subscription existed
    c.send(publish("rc/a", b"x", qos=1, pid=7, v=5))
    assert c.read() == (0x40, b"\x00\x07\x10")          # unsubscribed: nobody again


def test_retained_message_expiry(broker_factory):
    b = broker_factory()
    p = Raw(b.port)
    p.connect("rx", 5)
    p.send(publish("rexp/a", b"short", retain=True, v=5, pprops=b"\x02\x00\x00\x00\x01"))
    p.send(publish("rexp/b", b"long", retain=True, v=5, pprops=b"\x02\x00\x00\x00\x3c"))
    time.sleep(2.2)
    s = Raw(b.port)
    s.connect("rxs", 5)
    s.send(subscribe(1, [("rexp/#", 0)], v=5))
    assert s.read()[0] == 0x90
    first, body = s.read()
    t, _, pr, pay = publish_fields(body, 0, 5)
    assert (first, t, pay) == (0x31, b"rexp/b", b"long")
    assert 55 <= prop_dict(pr)[0x02] <= 59
    assert s.nothing(0.4)


def test_response_information_on_request(broker_factory, tmp_path):
    # Request Response Information (0x19) = 1 gets the configured basis for
    # response topics in CONNACK (0x1A); without the request, nothing.
    b = broker_factory(response_info="reply/%c/")
    r = Raw(b.port)
    pr = connack_props(r.connect("asker", 5, cprops=b"\x19\x01"))
    assert pr[0x1A] == b"reply/asker/"
    r.close()
    r = Raw(b.port)
    assert 0x1A not in connack_props(r.connect("quiet", 5))
    r.close()
    # Our client receives it as .response_info and can answer on it.
    from support.harness import run_mpy
    out = run_mpy("""
from umqtt_full import MQTTClient
c = MQTTClient("me", "127.0.0.1", %d, version=5, connect_props={0x19: 1})
c.connect()
print("RI", c.response_info)
c.disconnect()
""" % b.port, heap="128K")
    assert "RI reply/me/" in out.stdout


def test_overlapping_v5_subscriptions_one_copy_highest_qos_every_id(broker_factory):
    # [MQTT-3.3.4-3..5]: one copy at the highest granted QoS that carries the
    # subscription identifier of every matching subscription.
    b = broker_factory()
    s = Raw(b.port)
    s.connect("over", 5)
    for pid, f, q, sid in ((1, "o/#", 1, 7), (2, "o/+", 2, 300), (3, "+/x", 0, 9)):
        s.send(subscribe(pid, [(f, q)], v=5, sprops=b"\x0b" + varint(sid)))
        assert s.read() == (0x90, bytes([0, pid, 0, q]))
    p = Raw(b.port)
    p.connect("pub", 4)
    p.send(publish("o/x", b"once", qos=2, pid=5))
    assert p.read()[0] == 0x50
    first, body = s.read()
    assert first & 0x06 == 0x04  # QoS 2: the highest of 1, 2, 0
    topic, pid, pr, payload = publish_fields(body, 2, 5)
    assert (topic, payload) == (b"o/x", b"once")
    got = prop_dict(pr)
    assert list(got) == [0x0B] and sorted(got[0x0B]) == [7, 9, 300], got
    assert s.nothing(0.4)  # one copy only
