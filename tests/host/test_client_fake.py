# Behaviour no real broker will show on demand, against a scripted server in
# the test: malformed input (MQTTException, never a crash or hang), incoming
# topic aliases, the AUTH exchange, SUBACK refusals, server DISCONNECT.
import socket
import threading

import pytest

from test_client_helpers import run_mpy, results
from test_broker_helpers import pkt, s16, varint as _varint  # noqa: F401  (hand-built packets)


class FakeServer:
    def __init__(self, script):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(1)
        self.port = self.ls.getsockname()[1]
        self.log = []
        self.error = None
        self.t = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.t.start()

    def _run(self, script):
        try:
            c, _ = self.ls.accept()
            c.settimeout(10)
            self.c = c
            script(self)
        except Exception as e:  # reported by the test
            self.error = e

    def next_connection(self):
        self.c.close()
        c, _ = self.ls.accept()
        c.settimeout(10)
        self.c = c

    def recv_exact(self, n):
        b = b""
        while len(b) < n:
            d = self.c.recv(n - len(b))
            if not d:
                raise EOFError
            b += d
        return b

    def read(self):
        first = self.recv_exact(1)[0]
        n = shift = 0
        while True:
            b = self.recv_exact(1)[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        body = self.recv_exact(n)
        self.first = first
        self.log.append((first >> 4, body))
        return first >> 4, body

    def send(self, data):
        self.c.sendall(data)

    def close(self):
        self.t.join(10)
        self.ls.close()


CONNACK4 = pkt(0x20, b"\x00\x00")
CONNACK5 = pkt(0x20, b"\x00\x00\x00")


def client_script(port, v, body, extra=""):
    return """
from umqtt_full import MQTTClient, MQTTException, props as P
c = MQTTClient("fk", "127.0.0.1", %d, version=%d, timeout=3 %s)
try:
%s
except MQTTException as e:
    print("R exc", e.code)
except OSError as e:
    print("R oserr", e.args[0])
print("R sock", c.sock)
""" % (port, v, extra, "\n".join("    " + l for l in body.strip().splitlines()))


@pytest.mark.parametrize("v", [4, 5])
@pytest.mark.parametrize("bad", [
    pkt(0x20, b"\x02\x00" + (b"\x00" if False else b"")),  # CONNACK reserved flag
    pkt(0x20, b"\x00"),  # CONNACK too short
    b"\x20\xff\xff\xff\xff\x7f",  # remaining length over four bytes
    pkt(0x00, b""),  # reserved packet type 0
])
def test_malformed_connack(v, bad):
    if v == 5 and bad == pkt(0x20, b"\x02\x00"):
        bad = pkt(0x20, b"\x02\x00\x00")

    def script(s):
        s.read()
        s.send(bad)
        try:
            s.read()
        except Exception:
            pass
    srv = FakeServer(script)
    out = run_mpy(client_script(srv.port, v, "c.connect()\nprint('R connected')"), timeout=20)
    srv.close()
    r = results(out)
    assert r.get("exc") in (str(0x81), str(0x82)), out
    assert r["sock"] == "None"


@pytest.mark.parametrize("v", [4, 5])
@pytest.mark.parametrize("bad", [
    pkt(0x36, s16(b"a") + b"\x00\x01" + b"x"),  # QoS 3
    pkt(0x38, s16(b"a") + b"x"),  # DUP on QoS 0
    pkt(0x32, s16(b"a/+") + b"\x00\x01x"),  # wildcard in a topic name
    pkt(0x32, s16(b"a") + b"\x00\x00x"),  # packet id 0
    pkt(0x30, b"\x00\x05ab"),  # topic longer than the packet
    pkt(0x30, s16(b"\xc0\x80")),  # overlong UTF-8
    pkt(0x90, b"\x00\x07\x03"),  # SUBACK code 3
])
def test_malformed_after_connect_is_mqttexception(v, bad):
    seen = {}

    def script(s):
        s.read()
        s.send(CONNACK5 if v == 5 else CONNACK4)
        s.send(bad)
        try:
            t, body = s.read()
            seen["reply"] = (t, body)
        except Exception:
            pass
    srv = FakeServer(script)
    out = run_mpy(client_script(srv.port, v, "c.connect()\nc.wait_msg(3)\nprint('R handled')"),
                  timeout=20)
    srv.close()
    r = results(out)
    assert r.get("exc") in (str(0x81), str(0x82), str(0x90)), out  # 0x90: topic name invalid
    assert r["sock"] == "None"
    if v == 5:  # told the server why before closing
        assert seen["reply"][0] == 14 and seen["reply"][1][0] == int(r["exc"])


def test_truncated_packet_does_not_hang():
    def script(s):
        s.read()
        s.send(CONNACK4)
        s.send(b"\x30\x20\x00\x01a")  # promises 32 bytes, sends 3, then closes
        s.c.close()
    srv = FakeServer(script)
    out = run_mpy(client_script(srv.port, 4, "c.connect()\nc.wait_msg()"), timeout=20)
    srv.close()
    assert results(out)["oserr"] in ("104", "110")


def test_stalled_mid_packet_times_out():
    def script(s):
        s.read()
        s.send(CONNACK4)
        s.send(b"\x30\x20\x00\x01a")  # then silence
        import time
        time.sleep(8)
    srv = FakeServer(script)
    out = run_mpy(client_script(srv.port, 4, "c.connect()\nc.wait_msg()"), timeout=20)
    srv.close()
    assert results(out)["oserr"] == "110"


def test_incoming_topic_alias():
    def script(s):
        t, body = s.read()
        assert b"\x22\x00\x04" in body  # we offered Topic Alias Maximum 4
        s.send(CONNACK5)
        s.send(pkt(0x30, s16(b"room/1/temp") + b"\x03\x23\x00\x01" + b"20"))
        s.send(pkt(0x30, s16(b"") + b"\x03\x23\x00\x01" + b"21"))
        s.send(pkt(0x30, s16(b"room/2/temp") + b"\x03\x23\x00\x02" + b"30"))
        s.send(pkt(0x30, s16(b"") + b"\x03\x23\x00\x01" + b"22"))
        s.send(pkt(0x30, s16(b"") + b"\x03\x23\x00\x02" + b"31"))
        s.send(pkt(0x30, s16(b"") + b"\x03\x23\x00\x03" + b"x"))  # alias never set
        try:
            s.read()
        except Exception:
            pass
    srv = FakeServer(script)
    out = run_mpy(client_script(srv.port, 5, """
got = []
c.set_callback(lambda t, m: got.append((t, m)))
c.connect()
try:
    for i in range(6):
        c.wait_msg(3)
finally:
    print("R got", got)
""", ", topic_alias_in=4"), timeout=20)
    srv.close()
    r = results(out)
    assert r["got"] == str([(b"room/1/temp", b"20"), (b"room/1/temp", b"21"),
                            (b"room/2/temp", b"30"), (b"room/1/temp", b"22"),
                            (b"room/2/temp", b"31")])
    assert r["exc"] == str(0x82)


def test_auth_exchange():
    def script(s):
        t, body = s.read()
        assert b"\x15" + s16(b"TOY") in body and b"\x16" + s16(b"hello") in body
        s.send(pkt(0xF0, b"\x18" + _varint(12) + b"\x15" + s16(b"TOY") + b"\x16" + s16(b"abc")))
        t, body = s.read()
        assert t == 15 and body[0] == 0x18 and b"\x16" + s16(b"ABC!") in body, body
        s.send(CONNACK5)
        s.read()  # DISCONNECT
    srv = FakeServer(script)
    out = run_mpy(client_script(srv.port, 5, """
c.set_auth("TOY", b"hello", lambda m, d: d.upper() + b"!")
print("R sp", c.connect())
c.disconnect()
"""), timeout=20)
    srv.close()
    assert srv.error is None, srv.error
    assert results(out)["sp"] == "0"


@pytest.mark.parametrize("v,code", [(4, 0x80), (5, 0x87), (5, 0x8F)])
def test_suback_refusal_raises_code(v, code):
    def script(s):
        s.read()
        s.send(CONNACK5 if v == 5 else CONNACK4)
        t, body = s.read()
        props = b"\x00" if v == 5 else b""
        s.send(pkt(0x90, body[:2] + props + bytes([code])))
        s.read()
    srv = FakeServer(script)
    out = run_mpy(client_script(srv.port, v, "c.connect()\nc.subscribe(b'x/y', 1)\nprint('R none')"),
                  timeout=20)
    srv.close()
    assert results(out)["exc"] == str(code)


def test_server_disconnect_reason():
    def script(s):
        s.read()
        s.send(CONNACK5)
        s.send(pkt(0xE0, b"\x8b\x00"))
        import time
        time.sleep(1)
    srv = FakeServer(script)
    out = run_mpy(client_script(srv.port, 5, "c.connect()\nc.wait_msg(3)"), timeout=20)
    srv.close()
    r = results(out)
    assert r["exc"] == str(0x8B) and r["sock"] == "None"


def test_pubrec_error_reason_raises():
    def script(s):
        s.read()
        s.send(CONNACK5)
        t, body = s.read()
        pid = body[2 + 3:2 + 3 + 2]
        s.send(pkt(0x50, pid + b"\x97"))  # quota exceeded
        s.read()
    srv = FakeServer(script)
    out = run_mpy(client_script(srv.port, 5, "c.connect()\nc.publish(b'q/x', b'1', qos=2)\nprint('R none')"),
                  timeout=20)
    srv.close()
    r = results(out)
    assert r["exc"] == str(0x97)


def test_resend_with_dup_after_reconnect_and_pubrel_resume():
    # Connection 1: the broker takes a QoS 1 and a QoS 2 PUBLISH, answers only
    # PUBREC for the QoS 2, then the link drops. Connection 2 (session present):
    # the client must resend the QoS 1 PUBLISH with DUP and the same packet id,
    # and PUBREL (not the PUBLISH) for the QoS 2 one.
    seen = {}

    def script(s):
        s.read()
        s.send(CONNACK4)
        t1, b1 = s.read()
        t2, b2 = s.read()
        seen["first"] = (t1, b1, t2, b2)
        pid2 = b2[2 + 5:2 + 5 + 2]
        s.send(pkt(0x50, pid2))  # PUBREC
        t, b = s.read()  # PUBREL
        seen["pubrel1"] = (t, b)
        s.next_connection()
        t, body = s.read()
        seen["connect2_clean"] = body[7] & 2
        s.send(pkt(0x20, b"\x01\x00"))  # session present
        got = []
        for _ in range(2):
            got.append(s.read())
            if got[-1][0] == 3:
                seen["dup_flags"] = s.first & 0x0F
        seen["second"] = got
        s.raw_first = None
        for t, b in got:
            if t == 3:
                s.send(pkt(0x40, b[2 + 5:2 + 5 + 2]))
            if t == 6:
                s.send(pkt(0x70, b))
        s.read()  # DISCONNECT
    srv = FakeServer(script)
    srv_first = []
    out = run_mpy(client_script(srv.port, 4, """
c.connect(clean_session=False)
p1 = c.publish(b"dup/1", b"one", qos=1, wait=False)
p2 = c.publish(b"dup/2", b"two", qos=2, wait=False)
c.flush(10)
print("R left", c.inflight(), p1, p2)
c.disconnect()
""", ", reconnect=True, backoff_min=0.05, backoff_max=0.1, keepalive=0"), timeout=30)
    srv.close()
    assert srv.error is None, srv.error
    assert results(out)["left"].startswith("0 ")
    assert seen["connect2_clean"] == 0  # resumed the session
    (ta, ba), (tb, bb) = seen["second"]
    by_type = {ta: ba, tb: bb}
    assert set(by_type) == {3, 6}
    t1, b1, t2, b2 = seen["first"]
    # the PUBLISH came again with the same packet id; the QoS 2 flow resumed at PUBREL
    assert by_type[3] == b1
    assert seen["dup_flags"] == 0x08 | 0x02  # DUP, QoS 1
    assert by_type[6] == b2[7:9]


def test_v5_packet_over_our_maximum_is_refused():
    seen = {}

    def script(s):
        s.read()
        s.send(CONNACK5)
        s.send(pkt(0x30, s16(b"big") + b"\x00" + b"z" * 600))
        try:
            seen["reply"] = s.read()
        except Exception:
            pass
    srv = FakeServer(script)
    out = run_mpy(client_script(srv.port, 5, "c.connect()\nc.wait_msg(3)", ", rx_size=256"),
                  timeout=20)
    srv.close()
    assert results(out)["exc"] == str(0x95)
    assert seen["reply"] == (14, b"\x95")


def test_reauthenticate():
    seen = {}

    def script(s):
        s.read()
        s.send(CONNACK5)
        t, body = s.read()
        seen["auth"] = (t, body)
        s.send(pkt(0xF0, b"\x00\x00"))  # success
        s.read()  # PINGREQ
        s.send(pkt(0xD0, b""))
        s.read()  # DISCONNECT
    srv = FakeServer(script)
    out = run_mpy(client_script(srv.port, 5, """
c.set_auth("TOY", b"hello", lambda m, d: b"")
c.connect()
c.reauthenticate(b"again")
c.ping()
print("R t", c.wait_msg(3), c.wait_msg(3))
c.disconnect()
"""), timeout=20)
    srv.close()
    assert srv.error is None, srv.error
    t, body = seen["auth"]
    assert t == 15 and body[0] == 0x19 and b"\x16" + s16(b"again") in body
    assert results(out)["t"] == "15 13"  # AUTH success handled, then PINGRESP
