# Blocking client against mosquitto, MQTT 3.1.1 and 5: connect, QoS 0/1/2 in
# both directions, pipelined publishes, refusals surfaced as MQTTException.
import threading
import time

import pytest

from test_client_helpers import (run_mpy, start_mpy, finish, results, Collector, paho,
                                 mosquitto_factory, mosq)  # noqa: F401 (fixtures)

VERSIONS = [4, 5]


@pytest.mark.parametrize("v", VERSIONS)
def test_publish_subscribe_self_all_qos(mosq, v):
    out = run_mpy("""
from umqtt_full import MQTTClient
got = []
def cb(t, m):
    got.append((t, m))
c = MQTTClient(b"self%(v)d", "127.0.0.1", %(port)d, keepalive=30, version=%(v)d)
c.set_callback(cb)
print("R sp", c.connect())
print("R granted", c.subscribe(b"self/#", 2))
for i in range(30):
    c.publish(b"self/%%d" %% (i %% 3), b"m%%d" %% i, qos=i %% 3)
while len(got) < 30:
    c.wait_msg()
print("R got", sorted(got) == sorted((b"self/%%d" %% (i %% 3), b"m%%d" %% i) for i in range(30)))
print("R types", type(got[0][0]).__name__, type(got[0][1]).__name__)
c.disconnect()
""" % dict(v=v, port=mosq.port))
    r = results(out)
    assert r == {"sp": "0", "granted": "2", "got": "True", "types": "bytes bytes"}


@pytest.mark.parametrize("v", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mpy_to_paho(mosq, v, qos):
    col = Collector(mosq.port, "up/#", qos=2, version=v)
    try:
        run_mpy("""
from umqtt_full import MQTTClient
c = MQTTClient("up%(v)d", "127.0.0.1", %(port)d, version=%(v)d)
c.connect()
for i in range(200):
    c.publish(b"up/x", b"%%d" %% i, qos=%(qos)d)
c.disconnect()
""" % dict(v=v, port=mosq.port, qos=qos))
        msgs = col.wait(200)
    finally:
        col.close()
    assert [int(m[1]) for m in msgs] == list(range(200))
    assert {m[2] for m in msgs} == {qos}


@pytest.mark.parametrize("v", VERSIONS)
def test_pipelined_qos1_qos2(mosq, v):
    col = Collector(mosq.port, "pipe/#", qos=2, version=v)
    try:
        out = run_mpy("""
from umqtt_full import MQTTClient
c = MQTTClient("pipe%(v)d", "127.0.0.1", %(port)d, version=%(v)d, inflight=16)
c.connect()
peak = 0
for i in range(300):
    c.publish(b"pipe/x", b"%%d" %% i, qos=1 + i %% 2, wait=False)
    peak = max(peak, c.inflight())
c.flush()
print("R peak", peak)
print("R left", c.inflight())
c.disconnect()
""" % dict(v=v, port=mosq.port))
        msgs = col.wait(300)
    finally:
        col.close()
    r = results(out)
    assert r["left"] == "0"
    assert 1 < int(r["peak"]) <= 16
    assert sorted(int(m[1]) for m in msgs) == list(range(300))


@pytest.mark.parametrize("v", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_paho_to_mpy(mosq, v, qos):
    p = start_mpy("""
from umqtt_full import MQTTClient
import sys
got = []
def cb(t, m):
    got.append(int(m))
c = MQTTClient("down%(v)d", "127.0.0.1", %(port)d, version=%(v)d, keepalive=10)
c.set_callback(cb)
c.connect()
c.subscribe("down/x", %(qos)d)
print("READY")
sys.stdout.flush() if hasattr(sys.stdout, "flush") else None
while len(got) < 200:
    if c.wait_msg(10) is None:
        break
print("R got", got == list(range(200)), len(got))
c.disconnect()
""" % dict(v=v, port=mosq.port, qos=qos))
    assert p.stdout.readline().strip() == "READY"
    pc = paho(mosq.port, version=v)
    pc.connect("127.0.0.1", mosq.port)
    pc.loop_start()
    infos = [pc.publish("down/x", b"%d" % i, qos=qos) for i in range(200)]
    for i in infos:
        i.wait_for_publish(10)
    out = finish(p)
    pc.loop_stop()
    pc.disconnect()
    assert results(out)["got"] == "True 200"


@pytest.mark.parametrize("v", VERSIONS)
def test_refused_connect_raises_code(mosquitto_factory, tmp_path, v):
    pw = tmp_path / "pw"
    pw.write_text("")
    m = mosquitto_factory("allow_anonymous false\npassword_file %s" % pw)
    out = run_mpy("""
from umqtt_full import MQTTClient, MQTTException
c = MQTTClient("ref", "127.0.0.1", %(port)d, user="u", password="p", version=%(v)d)
try:
    c.connect()
    print("R rc none")
except MQTTException as e:
    print("R rc", e.args[0], e.code)
print("R sock", c.sock)
""" % dict(v=v, port=m.port))
    # 3.1.1: CONNACK 5 (not authorised) exactly as umqtt.simple raises it; 5.0: reason 0x86/0x87.
    rc = results(out)["rc"].split()
    assert rc[0] == rc[1]
    assert int(rc[0]) in ((5,) if v == 4 else (0x86, 0x87))
    assert results(out)["sock"] == "None"


@pytest.mark.parametrize("v", VERSIONS)
def test_unsubscribe_stops_delivery(mosq, v):
    out = run_mpy("""
from umqtt_full import MQTTClient
got = []
c = MQTTClient("uns", "127.0.0.1", %(port)d, version=%(v)d)
c.set_callback(lambda t, m: got.append(m))
c.connect()
c.subscribe(b"uns/a", 1)
c.publish(b"uns/a", b"1", qos=1)
c.wait_msg(5)
c.unsubscribe(b"uns/a")
c.publish(b"uns/a", b"2", qos=1)
c.wait_msg(1)
print("R got", got)
c.disconnect()
""" % dict(v=v, port=mosq.port))
    assert results(out)["got"] == "[b'1']"
