# MQTT 5 features against mosquitto: server-assigned id and keepalive, topic
# aliases (and their cap at the server's Topic Alias Maximum, seen on the
# wire), Maximum Packet Size both ways, Receive Maximum, will properties and
# delay, subscription options, properties both ways (every request/response
# property in the callback, respond(), Message.props()), reason codes, AUTH
# refusal, request/response. Plus the 3.1.1 oversized-packet drain policy.
import os
import signal
import threading
import time

import pytest

from test_client_helpers import (run_mpy, start_mpy, finish, results, Collector, paho, Proxy,
                                 mosquitto_factory, mosq, proxy_factory)  # noqa: F401


def test_assigned_client_id_and_server_keepalive(mosquitto_factory):
    m = mosquitto_factory("max_keepalive 10")
    out = run_mpy("""
from umqtt_full import MQTTClient
c = MQTTClient("", "127.0.0.1", %d, keepalive=60, version=5)
c.connect()
print("R cid", c.client_id)
print("R ka", c.keepalive, c._ka_ms)
c.disconnect()
""" % m.port)
    r = results(out)
    assert r["cid"].startswith("auto-")
    assert r["ka"] == "10 10000"


def test_outgoing_topic_alias(mosq, proxy_factory):
    # mosquitto allows 10 aliases: repeated topics go out as 2-byte aliases.
    col = Collector(mosq.port, "alias/#", version=5)
    sizes = {}
    topic = "alias/" + "t" * 50
    for n_alias in (0, 8):
        px = proxy_factory(mosq.port)
        run_mpy("""
from umqtt_full import MQTTClient
c = MQTTClient("al", "127.0.0.1", %d, version=5, topic_alias_out=%d)
c.connect()
for i in range(100):
    c.publish(b"%s/%%d" %% (i %% 3), b"%%d" %% i)
c.publish(b"%s/1", b"end", qos=1)
c.disconnect()
""" % (px.port, n_alias, topic, topic))
        sizes[n_alias] = px.up_total
    msgs = col.wait(202)
    col.close()
    assert len(msgs) == 202
    for m in msgs:
        if m[1] != b"end":
            assert m[0] == "%s/%d" % (topic, int(m[1]) % 3)
    # 97 publishes of 3 repeated 64-byte topics carry an alias instead of the topic
    assert sizes[0] - sizes[8] > 90 * 55


class CaptureProxy(Proxy):
    # The test's proxy, also keeping every client->broker byte.
    def __init__(self, port):
        self.captured = bytearray()
        super().__init__(port)

    def _count(self, d, up):
        if up:
            self.captured += d
        return super()._count(d, up)


def _publishes(data):
    # [(topic, topic alias or 0, payload)] of the v5 PUBLISH packets in a byte stream.
    from paho.mqtt.properties import Properties
    from paho.mqtt.packettypes import PacketTypes
    out = []
    i = 0
    while i < len(data):
        first = data[i]
        rl, mul, j = 0, 1, i + 1
        while True:
            b = data[j]
            j += 1
            rl += (b & 0x7F) * mul
            mul *= 128
            if not b & 0x80:
                break
        body = bytes(data[j:j + rl])
        assert len(body) == rl, "truncated capture"
        i = j + rl
        if first >> 4 != 3:
            continue
        tn = body[0] << 8 | body[1]
        k = 2 + tn + (2 if (first >> 1) & 3 else 0)
        pr = Properties(PacketTypes.PUBLISH)
        pr.unpack(body[k:])
        n = len(pr.pack())  # the property length prefix and properties
        out.append((body[2:2 + tn].decode(), getattr(pr, "TopicAlias", 0), body[k + n:]))
    return out


def test_outgoing_topic_alias_capped_by_server_maximum(mosquitto_factory):
    # mosquitto configured with max_topic_alias 2 (our table holds 8): with six
    # topics published in turn, the aliases on the wire are only 1 and 2, each
    # set with its topic before it is used alone, and mosquitto (which would
    # disconnect a client over its maximum) delivers every message under its
    # right topic.
    m = mosquitto_factory("max_topic_alias 2")
    px = CaptureProxy(m.port)
    col = Collector(m.port, "cap/#", version=5)
    try:
        out = run_mpy("""
from umqtt_full import MQTTClient, props as P
c = MQTTClient("cap", "127.0.0.1", %d, version=5, topic_alias_out=8)
c.connect()
print("R max", c.connack_props.get(P.TOPIC_ALIAS_MAXIMUM), c._aout_max)
for i in range(120):
    c.publish(b"cap/topic/%%d" %% (i %% 6), b"%%d" %% i, qos=i %% 2, wait=False)
c.flush()
c.publish(b"cap/topic/1", b"end", qos=1)
print("R up", c.is_connected())
c.disconnect()
""" % px.port)
        msgs = col.wait(121)
    finally:
        px.close()
        col.close()
    r = results(out)
    assert r["max"] == "2 2"
    assert r["up"] == "True"
    pubs = _publishes(px.captured)
    assert len(pubs) == 121
    known = {}
    for topic, alias, payload in pubs:
        assert 0 <= alias <= 2, (topic, alias)
        if alias and topic:
            known[alias] = topic             # alias set (or reset) with its topic
        elif alias:
            assert alias in known, alias     # alias alone: set before on this link
            topic = known[alias]
        if payload != b"end":
            assert topic == "cap/topic/%d" % (int(payload) % 6)
    assert sorted(known) == [1, 2]
    assert sum(1 for t, a, _ in pubs if a and not t) > 30  # the aliases are really used
    assert len(msgs) == 121
    for topic, payload, *_ in msgs:
        if payload != b"end":
            assert topic == "cap/topic/%d" % (int(payload) % 6)


def test_maximum_packet_size_both_ways(mosquitto_factory):
    m = mosquitto_factory("max_packet_size 300")
    p = start_mpy("""
from umqtt_full import MQTTClient, MQTTException
got = []
c = MQTTClient("mps", "127.0.0.1", %d, version=5, rx_size=200)
c.set_callback(lambda t, m: got.append(len(m)))
c.connect()
c.subscribe(b"mps/#", 1)
try:
    c.publish(b"mps/big", b"x" * 400, qos=1)
except MQTTException as e:
    print("R out", e.code)
print("READY")
while len(got) < 1:
    if c.wait_msg(5) is None:
        break
c.publish(b"mps/small", b"y" * 50, qos=1)
while len(got) < 2:
    if c.wait_msg(5) is None:
        break
print("R got", got)
""" % m.port)
    assert p.stdout.readline().strip() == "R out 149"
    assert p.stdout.readline().strip() == "READY"
    pc = paho(m.port, version=5)
    pc.connect("127.0.0.1", m.port)
    pc.loop_start()
    pc.publish("mps/a", b"z" * 250, qos=1).wait_for_publish(5)  # over our 200
    pc.publish("mps/b", b"z" * 100, qos=1).wait_for_publish(5)
    out = finish(p)
    pc.loop_stop()
    assert results(out)["got"] == "[100, 50]"


def test_v311_oversized_incoming_is_drained_and_acked(mosq):
    p = start_mpy("""
from umqtt_full import MQTTClient
got = []
c = MQTTClient("ovr", "127.0.0.1", %d, rx_size=200, keepalive=10)
c.set_callback(lambda t, m: got.append(len(m)))
c.connect()
c.subscribe(b"ovr/#", 2)
print("READY")
while len(got) < 2:
    if c.wait_msg(5) is None:
        break
c.wait_msg(1.5)  # an unacknowledged message would be resent? (not on one connection; the ack matters for sessions)
print("R got", got, c.dropped)
c.publish(b"ovr/after", b"ok", qos=1)
""" % mosq.port)
    assert p.stdout.readline().strip() == "READY"
    pc = paho(mosq.port)
    pc.connect("127.0.0.1", mosq.port)
    pc.loop_start()
    for q in (0, 1, 2):
        pc.publish("ovr/big", b"z" * 5000, qos=q).wait_for_publish(5)
    pc.publish("ovr/a", b"a" * 10, qos=1).wait_for_publish(5)
    pc.publish("ovr/b", b"b" * 20, qos=2).wait_for_publish(5)
    out = finish(p)
    pc.loop_stop()
    assert results(out)["got"] == "[10, 20] 3"


def test_receive_maximum_bounds_pipeline(mosquitto_factory):
    m = mosquitto_factory("max_inflight_messages 3")
    out = run_mpy("""
from umqtt_full import MQTTClient
c = MQTTClient("rm", "127.0.0.1", %d, version=5, inflight=16)
c.connect()
peak = 0
for i in range(100):
    c.publish(b"rm/x", b"%%d" %% i, qos=1, wait=False)
    peak = max(peak, c.inflight())
c.flush()
print("R peak", peak, c._window())
""" % m.port)
    assert results(out)["peak"] == "3 3"


def test_will_properties_and_delay(mosq):
    col = Collector(mosq.port, "will/#", version=5)
    p = start_mpy("""
import time
from umqtt_full import MQTTClient, props as P
c = MQTTClient("wl", "127.0.0.1", %d, version=5, session_expiry=30)
c.set_last_will(b"will/x", b"gone", qos=1, props={P.WILL_DELAY: 2, P.CONTENT_TYPE: "text/plain",
                                                    P.USER_PROPERTY: [("why", "crash")]})
c.connect()
print("READY")
time.sleep(30)
""" % mosq.port)
    assert p.stdout.readline().strip() == "READY"
    p.kill()
    t0 = time.time()
    p.communicate()
    os.unlink(p.script)
    msgs = col.wait(1, 10)
    dt = time.time() - t0
    col.close()
    assert len(msgs) == 1
    topic, payload, qos, retain, props = msgs[0]
    assert (topic, payload) == ("will/x", b"gone")
    assert props.ContentType == "text/plain"
    assert props.UserProperty == [("why", "crash")]
    assert 1.5 <= dt < 6


def test_subscription_options(mosq):
    pc = paho(mosq.port, version=5)
    pc.connect("127.0.0.1", mosq.port)
    pc.loop_start()
    pc.publish("so/ret", b"kept", qos=1, retain=True).wait_for_publish(5)
    out = run_mpy("""
from umqtt_full import MQTTClient
got = []
def cb(m):
    got.append((m.topic(), m.payload(), m.retain))
c = MQTTClient("so", "127.0.0.1", %d, version=5)
c.set_callback(cb, zero_copy=True)
c.connect()
c.subscribe(b"so/nl", 1, no_local=True)
c.publish(b"so/nl", b"mine", qos=1)
c.wait_msg(1)
print("R nolocal", got); got.clear()
c.subscribe(b"so/ret", 1, retain_handling=2)
c.wait_msg(1)
print("R rh2", got); got.clear()
c.unsubscribe(b"so/ret")
c.subscribe(b"so/ret", 1, retain_as_published=True)
c.wait_msg(2)
print("R rap", got); got.clear()
c.subscribe(b"so/ret", 1, retain_handling=1)   # exists already: no retained resend
c.wait_msg(1)
print("R rh1", got)
""" % mosq.port)
    pc.loop_stop()
    r = results(out)
    assert r["nolocal"] == "[]"
    assert r["rh2"] == "[]"
    assert r["rap"] == "[(b'so/ret', b'kept', True)]"
    assert r["rh1"] == "[]"


def test_properties_both_ways_and_subscription_id(mosq):
    import paho.mqtt.client as mqtt
    from paho.mqtt.properties import Properties
    from paho.mqtt.packettypes import PacketTypes
    col = Collector(mosq.port, "pr/out", version=5)
    p = start_mpy("""
from umqtt_full import MQTTClient, props as P
got = []
c = MQTTClient("pr", "127.0.0.1", %d, version=5)
c.set_callback(lambda t, m, p: got.append((t, m, p)), props=True)
c.connect()
c.subscribe(b"pr/in", 1, props={P.SUBSCRIPTION_ID: 7})
c.publish(b"pr/out", b"hello", qos=1, props={P.CONTENT_TYPE: "text/x", P.PAYLOAD_FORMAT: 1,
          P.MESSAGE_EXPIRY: 60, P.RESPONSE_TOPIC: "pr/reply", P.CORRELATION_DATA: b"\\x01\\x02",
          P.USER_PROPERTY: [("a", "1"), ("b", "2")]})
print("READY")
c.wait_msg(5)
t, m, p = got[0]
print("R in", t, m, sorted(p.items()))
""" % mosq.port)
    assert p.stdout.readline().strip() == "READY"
    msgs = col.wait(1)
    pr = msgs[0][4]
    assert pr.ContentType == "text/x" and pr.PayloadFormatIndicator == 1
    assert 55 <= pr.MessageExpiryInterval <= 60
    assert pr.ResponseTopic == "pr/reply" and pr.CorrelationData == b"\x01\x02"
    assert pr.UserProperty == [("a", "1"), ("b", "2")]
    pc = paho(mosq.port, version=5)
    pc.connect("127.0.0.1", mosq.port)
    pc.loop_start()
    pp = Properties(PacketTypes.PUBLISH)
    pp.ContentType = "app/y"
    pp.UserProperty = [("k", "v")]
    pc.publish("pr/in", b"there", qos=1, properties=pp).wait_for_publish(5)
    out = finish(p)
    pc.loop_stop()
    col.close()
    assert results(out)["in"] == "b'pr/in' b'there' [(3, 'app/y'), (11, [7]), (38, [('k', 'v')])]"


def test_puback_reason_code_from_acl(mosquitto_factory, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite open/#\n")
    m = mosquitto_factory("acl_file %s" % acl)
    out = run_mpy("""
from umqtt_full import MQTTClient, MQTTException
c = MQTTClient("acl", "127.0.0.1", %d, version=5)
c.connect()
try:
    c.publish(b"secret/x", b"1", qos=1)
    print("R pub none")
except MQTTException as e:
    print("R pub", e.code)
c.publish(b"open/x", b"1", qos=1)
print("R ok", c.is_connected())
""" % m.port)
    r = results(out)
    # (mosquitto 2.0 grants denied subscriptions and filters delivery, so the
    # SUBACK failure path is tested against the scripted server in test_client_fake.py)
    assert r["pub"] == str(0x87)
    assert r["ok"] == "True"


def test_auth_method_refused_by_plain_mosquitto(mosq):
    out = run_mpy("""
from umqtt_full import MQTTClient, MQTTException
c = MQTTClient("au", "127.0.0.1", %d, version=5)
c.set_auth("SCRAM-SHA-1", b"client-first", lambda m, d: b"")
try:
    c.connect()
except MQTTException as e:
    print("R rc", e.code)
""" % mosq.port)
    assert results(out)["rc"] == str(0x8C)


def test_server_limits_max_qos_and_retain(mosquitto_factory):
    m = mosquitto_factory("max_qos 1\nretain_available false")
    out = run_mpy("""
from umqtt_full import MQTTClient, MQTTException
c = MQTTClient("lim", "127.0.0.1", %d, version=5)
c.connect()
for kw in ({"qos": 2}, {"retain": True}):
    try:
        c.publish(b"lim/x", b"1", **kw)
        print("R r none")
    except MQTTException as e:
        print("R", list(kw)[0], e.code)
""" % m.port)
    r = results(out)
    assert r["qos"] == str(0x9B) and r["retain"] == str(0x9A)


def test_request_response(mosq):
    from paho.mqtt.properties import Properties
    from paho.mqtt.packettypes import PacketTypes
    pc = paho(mosq.port, version=5)
    ready = threading.Event()

    def on_message(c, u, m):
        pr = Properties(PacketTypes.PUBLISH)
        pr.CorrelationData = m.properties.CorrelationData
        c.publish(m.properties.ResponseTopic, b"echo:" + m.payload, qos=1, properties=pr)
    pc.on_message = on_message
    pc.on_subscribe = lambda *a: ready.set()
    pc.connect("127.0.0.1", mosq.port)
    pc.subscribe("svc/echo", 1)
    pc.loop_start()
    assert ready.wait(5)
    out = run_mpy("""
from umqtt_full import MQTTClient
c = MQTTClient("rr", "127.0.0.1", %d, version=5)
c.connect()
for i in range(3):
    msg, props = c.request(b"svc/echo", b"ping%%d" %% i, timeout=5)
    print("R r%%d" %% i, msg)
""" % mosq.port)
    pc.loop_stop()
    r = results(out)
    assert r == {"r0": "b'echo:ping0'", "r1": "b'echo:ping1'", "r2": "b'echo:ping2'"}


def test_receive_properties_respond_and_zero_copy_props(mosq):
    # paho publishes two requests to our client through mosquitto with payload
    # format indicator, message expiry, content type, response topic,
    # correlation data and a user property. The first goes to a
    # set_callback(cb, props=True) callback, which answers with respond(p, ...,
    # qos=1); the second to a zero-copy callback, which reads Message.props()
    # and answers with respond(m.props(), ...). paho sees both answers on the
    # response topic with the request's correlation data.
    from paho.mqtt.properties import Properties
    from paho.mqtt.packettypes import PacketTypes
    col = Collector(mosq.port, "rq/reply", version=5)
    p = start_mpy("""
from umqtt_full import MQTTClient, props as P
got = []
def cb(t, m, p):
    got.append((t, m, p))
    c.respond(p, b"re:" + m, qos=1)
def zcb(m):
    p = m.props()
    got.append((m.topic(), m.payload(), p))
    c.respond(p, b"zc:" + m.payload())
c = MQTTClient("rp", "127.0.0.1", %d, version=5, keepalive=30)
c.set_callback(cb, props=True)
c.connect()
c.subscribe(b"rq/in", 1)
print("READY")
while len(got) < 1:
    if c.wait_msg(5) is None:
        break
c.set_callback(zcb, zero_copy=True)
print("NEXT")
while len(got) < 2:
    if c.wait_msg(5) is None:
        break
for i, (t, m, p) in enumerate(got):
    print("R m%%d" %% i, t, m)
    for k in sorted(p):
        print("R p%%d_%%d" %% (i, k), repr(p[k]))
c.flush()
c.disconnect()
""" % mosq.port)
    pc = paho(mosq.port, version=5)
    try:
        assert p.stdout.readline().strip() == "READY"
        pc.connect("127.0.0.1", mosq.port)
        pc.loop_start()

        def request(n, qos):
            pp = Properties(PacketTypes.PUBLISH)
            pp.PayloadFormatIndicator = 1
            pp.MessageExpiryInterval = 60
            pp.ContentType = "text/plain"
            pp.ResponseTopic = "rq/reply"
            pp.CorrelationData = b"\x00\xffc%d" % n
            pp.UserProperty = [("req", str(n))]
            pc.publish("rq/in", b"req%d" % n, qos=qos, properties=pp).wait_for_publish(5)

        request(1, 1)
        assert p.stdout.readline().strip() == "NEXT"
        request(2, 2)
        out = finish(p)
        replies = col.wait(2, 10)
    finally:
        if p.poll() is None:
            p.kill()
        pc.loop_stop()
        pc.disconnect()
        col.close()
    r = results(out)
    for i, n in ((0, 1), (1, 2)):
        assert r["m%d" % i] == "b'rq/in' b'req%d'" % n
        assert r["p%d_1" % i] == "1"                                # payload format: UTF-8
        assert 55 <= int(r["p%d_2" % i]) <= 60                      # message expiry left
        assert r["p%d_3" % i] == "'text/plain'"
        assert r["p%d_8" % i] == "'rq/reply'"                       # response topic
        assert r["p%d_9" % i] == repr(b"\x00\xffc%d" % n)           # correlation data
        assert r["p%d_38" % i] == "[('req', '%d')]" % n
        assert sorted(k for k in r if k.startswith("p%d_" % i)) == \
            ["p%d_%d" % (i, k) for k in (1, 2, 3, 38, 8, 9)]       # nothing else
    assert [(m[0], m[1], m[2], getattr(m[4], "CorrelationData", None)) for m in replies] == [
        ("rq/reply", b"re:req1", 1, b"\x00\xffc1"),
        ("rq/reply", b"zc:req2", 0, b"\x00\xffc2")]
