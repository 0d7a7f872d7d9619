# The broker's bridge (broker_bridge.py, docs/bridge.md): our broker on the
# Unix port bridged to a private mosquitto, paho-mqtt clients on both sides.
# Prefix rewriting both ways at QoS 1, a "both" rule without loops (exactly one
# copy everywhere, MQTT 3.1.1 and 5), the upstream stopped and restarted in the
# middle of a QoS 1 stream with every message arriving, the bounded queue's
# drop policy, $SYS state and counters, config errors, lazy import.
#
# Heap: the broker and the client compiled from source do not fit 128 KB
# together (measured, docs/bridge.md); these brokers run with HEAP.
import json
import os
import time

import pytest

from support.harness import Mosquitto, free_port, run_mpy, start_mpy, wait_port, make_test_certs
from test_broker_helpers import broker_factory, Paho  # noqa: F401

HEAP = "128wK"  # word-adjusted: a 32-bit board's 128 KB (see test_broker_helpers.HEAP)


def link(port, topics, **kw):
    d = {"name": "up", "host": "127.0.0.1", "port": port, "topics": topics,
         "backoff_min": 0.2, "backoff_max": 1, "sys_interval": 1, "keepalive": 10}
    d.update(kw)
    return d


def wait_for(pred, timeout=10, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def got(p):
    """(topic, payload, qos) of what a Paho peer received, in order."""
    return [(m.topic, bytes(m.payload), m.qos) for m in p.wait(0, 0)]


def sys_values(p, key):
    """Payloads a Paho peer saw on $SYS/broker/bridge/up/<key>, in order."""
    t = "$SYS/broker/bridge/up/" + key
    return [bytes(m.payload).decode() for m in p.wait(0, 0) if m.topic == t]


@pytest.mark.parametrize("v", [4, 5])
def test_out_and_in_with_prefixes_qos1(broker_factory, mosquitto_factory, v):
    m = mosquitto_factory()
    b = broker_factory({"bridge": link(m.port, ["# out 1 sensors/ site1/sensors/",
                                                "# in 1 cmd/ site1/cmd/"], version=v)}, heap=HEAP)
    b.wait_log("bridge up: connected")
    remote = Paho(m.port, "remote", version=v)
    assert remote.sub("site1/sensors/#", 1) == [1]
    local = Paho(b.port, "local", version=v)
    assert local.sub("cmd/#", 1) == [1]
    local.pub("sensors/t", b"21.5", qos=1)
    local.pub("other/t", b"not bridged", qos=1)
    remote.wait(1)
    remote.pub("site1/cmd/led", b"on", qos=1)
    remote.pub("cmd/led", b"no prefix: not bridged", qos=1)
    local.wait(1)
    time.sleep(0.5)  # anything unexpected has time to arrive
    assert got(remote) == [("site1/sensors/t", b"21.5", 1)]
    assert got(local) == [("cmd/led", b"on", 1)]
    for p in (remote, local):
        p.stop()


@pytest.mark.parametrize("v", [4, 5])
def test_both_rule_exactly_one_copy_no_loop(broker_factory, mosquitto_factory, v):
    # 3.1.1 upstream echoes the bridge's own messages back (no no-local): the
    # echo table drops them; on 5 the subscription has no-local. Messages from
    # upstream never go back out in either case.
    m = mosquitto_factory()
    b = broker_factory({"bridge": link(m.port, ["shared/# both 1"], version=v)}, heap=HEAP)
    b.wait_log("bridge up: connected")
    remote = Paho(m.port, "remote", version=4)
    remote.sub("shared/#", 1)
    local = Paho(b.port, "local", version=4)
    local.sub("shared/#", 1)
    for i in range(5):
        local.pub("shared/l", b"L%d" % i, qos=1)
        remote.pub("shared/r", b"R%d" % i, qos=1)
    want = sorted([("shared/l", b"L%d" % i, 1) for i in range(5)] +
                  [("shared/r", b"R%d" % i, 1) for i in range(5)])
    assert wait_for(lambda: len(got(remote)) >= 10 and len(got(local)) >= 10)
    time.sleep(1.0)  # a loop would keep adding copies
    assert sorted(got(remote)) == want
    assert sorted(got(local)) == want
    # Order per direction is kept.
    assert [p for t, p, q in got(remote) if t == "shared/l"] == [b"L%d" % i for i in range(5)]
    assert [p for t, p, q in got(local) if t == "shared/r"] == [b"R%d" % i for i in range(5)]
    for p in (remote, local):
        p.stop()


def test_upstream_restart_mid_flow_every_qos1_arrives(broker_factory, mosquitto_factory, tmp_path):
    # mosquitto keeps sessions on disk so its subscriber (a persistent paho
    # session) and the bridge's session both survive the restart.
    db = tmp_path / "mqdb"
    db.mkdir()
    m = mosquitto_factory("persistence true\npersistence_location %s/\n" % db)
    b = broker_factory({"bridge": link(m.port, ['data/# out 1 "" site/'], keepalive=5)}, heap=HEAP)
    b.wait_log("bridge up: connected")
    remote = Paho(m.port, "collector", version=4, clean=False)
    remote.sub("site/#", 1)
    mon = Paho(b.port, "mon", version=4)
    mon.sub("$SYS/broker/bridge/up/#", 0)
    assert wait_for(lambda: sys_values(mon, "state") == ["connected"], 5), got(mon)
    pub = Paho(b.port, "pub", version=4)
    n = 45
    for i in range(n):
        if i == 15:
            m.stop()
            # While it is down: the bridge says so and QoS 1 waits in its queue.
            assert wait_for(lambda: sys_values(mon, "state")[-1:] == ["disconnected"], 5), got(mon)
        if i == 30:
            assert wait_for(lambda: sys_values(mon, "queued")[-1:] == ["15"], 3), got(mon)
            m.start()
        pub.pub("data/x", b"m%02d" % i, qos=1)
        time.sleep(0.02)
    want = set(b"m%02d" % i for i in range(n))
    assert wait_for(lambda: set(p for t, p, q in got(remote)) >= want, 20), \
        sorted(want - set(p for t, p, q in got(remote)))
    assert all(t == "site/data/x" and q == 1 for t, p, q in got(remote))
    st = sys_values(mon, "state")
    assert st[:3] == ["connected", "disconnected", "connected"], st
    assert wait_for(lambda: sys_values(mon, "sent")[-1:] == [str(n)], 3), got(mon)
    assert sys_values(mon, "dropped")[-1] == "0"
    assert sys_values(mon, "queued")[-1] == "0"
    print("duplicates (QoS 1 is at least once):", len(got(remote)) - n)
    for p in (remote, mon, pub):
        p.stop()


def test_queue_full_drops_oldest_counted(broker_factory, tmp_path):
    # The upstream is down from the start; a 200-byte queue holds 10 of these
    # entries (19 bytes each): the 10 oldest of 20 are dropped and counted, the
    # 10 newest arrive when the upstream comes up. QoS 0 is not queued at all.
    db = tmp_path / "mqdb"
    db.mkdir()
    m = Mosquitto(tmp_path / "mq", "persistence true\npersistence_location %s/\n" % db).start()
    remote = Paho(m.port, "collector", version=4, clean=False)
    remote.sub("site/#", 1)
    remote.stop(clean=False)
    m.stop()
    try:
        b = broker_factory({"bridge": link(m.port, ['data/# out 1 "" site/'], queue_bytes=200)},
                           heap=HEAP)
        mon = Paho(b.port, "mon", version=4)
        mon.sub("$SYS/broker/bridge/up/#", 0)
        pub = Paho(b.port, "pub", version=4)
        for i in range(20):
            pub.pub("data/x", b"q%02d" % i, qos=1)
        pub.pub("data/x", b"zero", qos=0)
        assert wait_for(lambda: sys_values(mon, "dropped")[-1:] == ["11"], 5), got(mon)
        assert sys_values(mon, "queued")[-1] == "10"
        assert sys_values(mon, "state") == ["disconnected"]
        m.start()
        remote = Paho(m.port, "collector", version=4, clean=False)
        want = [b"q%02d" % i for i in range(10, 20)]
        assert wait_for(lambda: len(got(remote)) >= 10, 10)
        time.sleep(0.3)
        assert [p for t, p, q in got(remote)] == want
        assert wait_for(lambda: sys_values(mon, "state")[-1:] == ["connected"], 3)
        for p in (remote, mon, pub):
            p.stop()
    finally:
        m.stop()


def test_tls_upstream(tmp_path, mosquitto_factory):
    # TLS with the CA verified. The broker runs through start_mpy, whose
    # MICROPYPATH includes the frozen modules (ssl lives there).
    certs = make_test_certs(tmp_path / "certs")
    m = mosquitto_factory(tls={k: certs[k] for k in ("cafile", "certfile", "keyfile")})
    port = free_port()
    cfg = tmp_path / "b.json"
    cfg.write_text(json.dumps({"log_level": "debug", "bridge": link(
        m.port, ["t/# both 1 "], version=5, tls=True, ca_file=certs["ca_der"])}))
    p = start_mpy("from umqtt_full.broker import main; main(['--host', '127.0.0.1', '--port', '%d',"
                  " '--config', %r])" % (port, str(cfg)), heap=HEAP, log_path=tmp_path / "b.log")
    try:
        wait_port("127.0.0.1", port, 15)
        assert wait_for(lambda: "bridge up: connected" in p.output(), 10), p.output()
        import paho.mqtt.client as mqtt
        import threading
        rx = []
        ev = threading.Event()
        r = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="rtls")
        r.tls_set(ca_certs=certs["cafile"])
        r.on_message = lambda c, u, msg: (rx.append(bytes(msg.payload)), ev.set())
        r.connect("127.0.0.1", m.port)
        r.loop_start()
        r.subscribe("t/#", 1)
        time.sleep(0.3)
        local = Paho(port, "l")
        local.sub("t/#", 1)
        local.pub("t/a", b"over tls", qos=1)
        assert ev.wait(5), p.output()
        r.publish("t/b", b"back", qos=1)
        local.wait(2)
        time.sleep(0.3)
        assert sorted(rx) == [b"back", b"over tls"]  # its own "back" once: no echo from the bridge
        assert sorted(bytes(x.payload) for x in local.wait(0, 0)) == [b"back", b"over tls"]
        r.loop_stop()
        local.stop()
    finally:
        p.stop()


def test_config_errors_and_lazy_import(tmp_path):
    out = run_mpy("""
import sys, gc
from umqtt_full.broker import Broker
b = Broker({})
print("R lazy", "umqtt_full.broker_bridge" in sys.modules)
b = None
gc.collect()
T = ["a/# out 1"]
for cfg in ({"topics": T}, {"host": "h"}, {"host": "h", "topics": ["a/# sideways 1"]},
            {"host": "h", "topics": ["a/# out 3"]}, {"host": "h", "topics": ["a/# out 1 x/# y/"]},
            {"host": "h", "topics": ["a/#/b in 1"]}, {"host": "h", "topics": ["a out 1 x/"]},
            {"host": "h", "topics": T, "hots": 1}, {"host": "h", "topics": T, "version": 3},
            {"host": "h", "topics": T, "queue_policy": "random"},
            {"host": "h", "topics": T, "name": "a/b"},
            [{"host": "h", "topics": T}, {"host": "h", "topics": T}]):
    try:
        Broker({"bridge": cfg})
        print("R ok", cfg)
    except ValueError as e:
        print("E", e)
    gc.collect()
""", heap=HEAP)
    lines = out.stdout.split("\n")
    assert "R lazy False" in lines
    errs = [x[2:] for x in lines if x.startswith("E ")]
    assert errs == [
        "bridge bridge: host is required",
        "bridge bridge: topics: at least one rule",
        "bridge bridge: topic rule 'a/# sideways 1': direction 'sideways' is not out, in or both",
        "bridge bridge: topic rule 'a/# out 3': qos must be 0, 1 or 2",
        "bridge bridge: topic rule 'a/# out 1 x/# y/': a prefix cannot hold wildcards",
        "bridge bridge: topic rule 'a/#/b in 1': 'a/#/b' is not a valid topic filter",
        "bridge bridge: topic rule 'a out 1 x/': want 'pattern [out|in|both [qos [local-prefix remote-prefix]]]'",
        "bridge bridge: unknown setting 'hots'",
        "bridge bridge: version must be 4 (MQTT 3.1.1) or 5",
        "bridge bridge: queue_policy must be drop_oldest or drop_new",
        "bridge a/b: name must be a non-empty string without / + #",
        "bridge bridge: two bridges with this name",
    ], out.stdout


def test_bad_config_stops_the_broker_with_a_clear_error(tmp_path):
    from test_broker_helpers import Broker
    with pytest.raises(AssertionError) as e:
        Broker(tmp_path, {"bridge": {"host": "127.0.0.1", "topics": ["a/# out 9"]}}, HEAP)
    assert "ValueError: bridge bridge: topic rule 'a/# out 9': qos must be 0, 1 or 2" in str(e.value)


def test_out_hook_on_the_routing_path_allocates_nothing():
    # Every routed message passes the bridge's out hook: matching (or not) a
    # rule and copying into the queue, wrapping and dropping the oldest, runs
    # under heap_lock. (Handing a message to the client allocates its topic
    # and payload bytes: the client's session keeps them for a resend.)
    out = run_mpy(r"""
import micropython
from umqtt_full.broker import Broker
b = Broker({"log_level": "warn", "bridge": {"host": "127.0.0.1", "port": 1, "queue_bytes": 300,
            "topics": ['data/# out 1 "" site/', "x/# both 1 l/ r/"]}})
ln = b.bridge.links[0]
ln.up = True  # as if connected: QoS 0 is queued too
hit = bytearray(b"data/sensor/1")
miss = bytearray(b"other/sensor/1")
yb = bytearray(b"payload-" * 4)
b.m_yb = yb
b.m_yo = 0
b.m_yn = len(yb)
b.m_ret = False
b.m_to = 0

def run(tb):
    b.m_tb = tb
    b.m_tn = len(tb)
    for i in range(300):
        b.m_qos = i % 3
        b.bridge.out(b)


micropython.heap_lock()
try:
    run(hit)
    run(miss)
finally:
    micropython.heap_unlock()
q = ln.q
print("R queued", q.count, "dropped", q.dropped)
n = q.get(ln.st)
print("R first", bytes(ln.st[:n]))
""", heap=HEAP)
    r = dict(x[2:].split(" ", 1) for x in out.stdout.split("\n") if x.startswith("R "))
    # 2 + 3 + 13 ("site/data/sensor/1" is 18) + 32 = entries of 55 bytes: 5 fit in 300
    assert r["queued"] == "5 dropped 295"
    # the oldest kept is message 295 (295 % 3 = 1: QoS 1), intact after wrapping
    assert r["first"] == repr(b"\x01\x00\x12site/data/sensor/1" + b"payload-" * 4)


def test_example_config_loads(tmp_path):
    # examples/broker_bridge.json as shipped, with a real CA file in place of
    # ca.der (Broker() only builds the link; connecting starts in poll()).
    ex = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "broker_bridge.json")
    with open(ex) as f:
        cfg = json.load(f)
    cfg["bridge"]["ca_file"] = make_test_certs(tmp_path / "certs")["ca_der"]
    path = tmp_path / "ex.json"
    path.write_text(json.dumps(cfg))
    out = run_mpy("""
from umqtt_full.broker import Broker
b = Broker(%r)
ln = b.bridge.links[0]
print("R", ln.name, ln.c.port, ln.v5, ln.outs, ln.ins, ln.q.size)
""" % str(path), heap=HEAP)
    assert out.stdout.strip() == (
        "R cloud 8883 True [(b'sensors/#', 0, b'site1/', 1), (b'alerts/#', 0, b'', 1)] "
        "[(b'site1/cmd/#', 10, b'cmd/', 1), (b'alerts/#', 0, b'', 1)] 4096")
