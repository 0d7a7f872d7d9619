# The examples in examples/ are umqtt.simple/umqtt.robust examples with only
# the import changed; run each against mosquitto. The broker port is given by
# wrapping MQTTClient.__init__ (the examples themselves use the default port).
import os
import time

import pytest

from test_client_helpers import (ROOT, start_mpy, finish, run_mpy, results, Collector, paho,
                                 mosq, mosquitto_factory)  # noqa: F401
from test_client_tls import _certs

WRAP = """
import sys
sys.path.insert(0, %r)
import umqtt_full.client as C
_init = C.MQTTClient.__init__
def _at_test_port(self, client_id, server, port=0, *a, **kw):
    if not port:
        port = %d if kw.get("ssl") else %d
    _init(self, client_id, server, port, *a, **kw)
C.MQTTClient.__init__ = _at_test_port
"""


def wrap(port, tls_port=0):
    return WRAP % (os.path.join(ROOT, "examples"), tls_port, port)


def test_examples_use_only_the_import():
    for name in ("client_pub.py", "client_sub.py", "client_lwt.py", "client_tls.py",
                 "client_sub_robust.py"):
        src = open(os.path.join(ROOT, "examples", name)).read()
        imports = [l for l in src.splitlines() if l.startswith(("import ", "from "))]
        assert not [l for l in imports if "umqtt." in l], name
        assert [l for l in imports if l.startswith("from umqtt_full")], name


def test_example_pub(mosq):
    col = Collector(mosq.port, "foo_topic", version=4)
    run_mpy(wrap(mosq.port) + "import client_pub\nclient_pub.main('127.0.0.1')\n")
    msgs = col.wait(1, 5)
    col.close()
    assert [(m[0], m[1]) for m in msgs] == [("foo_topic", b"hello")]


def _publish_until(port, proc, want, payload=b"hello", timeout=15):
    pc = paho(port)
    pc.connect("127.0.0.1", port)
    pc.loop_start()
    os.set_blocking(proc.stdout.fileno(), False)
    buf = ""
    end = time.time() + timeout
    try:
        while time.time() < end:
            pc.publish("foo_topic", payload, qos=1)
            time.sleep(0.3)
            try:
                buf += os.read(proc.stdout.fileno(), 65536).decode()
            except BlockingIOError:
                pass
            if want in buf:
                return buf
    finally:
        pc.loop_stop()
        pc.disconnect()
    return buf


def _kill(p):
    p.kill()
    p.communicate()
    os.unlink(p.script)


def test_example_sub(mosq):
    p = start_mpy(wrap(mosq.port) + "import client_sub\nclient_sub.main('127.0.0.1')\n")
    try:
        out = _publish_until(mosq.port, p, "(b'foo_topic', b'hello')")
    finally:
        _kill(p)
    assert "(b'foo_topic', b'hello')" in out


def test_example_lwt(mosq):
    col = Collector(mosq.port, "status_topic", version=4)
    p = start_mpy(wrap(mosq.port) + "import client_lwt\nclient_lwt.main('127.0.0.1')\n")
    col.wait(1, 10)
    _kill(p)
    msgs = col.wait(2, 10)
    col.close()
    assert [m[1] for m in msgs] == [b"online", b"offline"]


def test_example_tls(mosquitto_factory, tmp_path):
    files, der = _certs(tmp_path)
    m = mosquitto_factory(tls=files)
    ca = tmp_path / "ca.der"
    ca.write_bytes(der["ca"])
    col = Collector(m.port, "foo_topic", version=4)
    run_mpy(wrap(m.port, m.tls_port) +
            "import client_tls\nclient_tls.main('127.0.0.1', %r)\n" % str(ca))
    msgs = col.wait(1, 5)
    col.close()
    assert [m[1] for m in msgs] == [b"hello over TLS"]


def test_example_sub_robust_survives_restart(mosq):
    p = start_mpy(wrap(mosq.port) + "import client_sub_robust\nclient_sub_robust.main('127.0.0.1')\n")
    try:
        out = _publish_until(mosq.port, p, "(b'foo_topic', b'before')", b"before")
        mosq.kill()
        time.sleep(1)
        mosq.start()
        out += _publish_until(mosq.port, p, "(b'foo_topic', b'after')", b"after", 20)
    finally:
        _kill(p)
    # Only true once the broker came back: the link loss was logged (DEBUG)
    # after the last message of the first connection, then the example (which
    # subscribes only when connect() finds no session, i.e. once) gets messages
    # again, because the client restored the subscription the restarted,
    # non-persistent mosquitto no longer had.
    for line in ("(b'foo_topic', b'before')", "mqtt: ", "(b'foo_topic', b'after')"):
        assert line in out, (line, out)
    first = out.index("(b'foo_topic', b'before')")
    drop = out.find("mqtt: ", first)
    back = out.index("(b'foo_topic', b'after')")
    assert first < drop < back, out
    assert "b'before'" not in out[drop:], out
    assert "b'after'" not in out[:drop], out
    assert out.count("New session being set up") == 1
    assert out.index("New session being set up") < first
