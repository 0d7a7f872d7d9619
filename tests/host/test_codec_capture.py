# The codec against real peers' bytes. Two directions:
#  * clients -> us: paho-mqtt (3.1.1 and 5.0) and mosquitto_pub/mosquitto_sub
#    talk to a tiny TCP server in this file that records every packet and
#    answers with hand-written CONNACK/SUBACK/PUBACK/PUBREC/PUBCOMP/UNSUBACK/
#    PINGRESP bytes (parsed by hand here, not by the codec, so a codec bug
#    cannot steer the conversation).
#  * mosquitto (broker, the harness's private instance on a free port with
#    its own config) -> us: raw sockets send hand-written packets and record
#    what it answers.
# Every captured packet is decoded with our codec and its fields checked; then
# re-encoded with our encoders from the decoded fields and compared byte for
# byte with the capture.
import socket
import subprocess
import threading

import pytest

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from umqtt_full import codec, wire
from umqtt_full import props as P
from umqtt_full.errors import MQTTException

MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"
MOSQUITTO_SUB = "/usr/bin/mosquitto_sub"
TIMEOUT = 10


def h(s):
    return bytes.fromhex("".join(s.split()))


# ---- independent framing (not the codec's) -----------------------------------

def _varint(b, i):
    # (value, index after it) of a variable byte integer at b[i].
    n = shift = 0
    while True:
        c = b[i]
        n |= (c & 0x7F) << shift
        i += 1
        if not c & 0x80:
            return n, i
        shift += 7


def read_packet(sock):
    # One whole packet as bytes, or None when the peer closed.
    first = sock.recv(1)
    if not first:
        return None
    hdr = bytearray(first)
    while True:
        c = sock.recv(1)
        if not c:
            return None
        hdr += c
        if not c[0] & 0x80:
            break
    rl, _ = _varint(hdr, 1)
    body = b""
    while len(body) < rl:
        chunk = sock.recv(rl - len(body))
        if not chunk:
            return None
        body += chunk
    return bytes(hdr) + body


def body_of(raw):
    _, i = _varint(raw, 1)
    return raw[i:]


def framed(data):
    # A hand-written packet's remaining length must match its bytes (so a
    # typo in a test vector fails here, not as a confusing peer error).
    rl, i = _varint(data, 1)
    assert i + rl == len(data), data
    return data


def with_header(first, body):
    n = len(body)
    hdr = bytearray([first])
    while True:
        b = n & 0x7F
        n >>= 7
        hdr.append(b | 0x80 if n else b)
        if not n:
            return bytes(hdr) + body


# ---- the recording server for clients ----------------------------------------

class Recorder:
    # Accepts one client, records its packets, answers like a broker would.
    # extra: optional callable(raw, version) -> bytes to send after the reply
    # (a PUBLISH after the SUBACK, for mosquitto_sub).
    def __init__(self, extra=None):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.lsock.settimeout(TIMEOUT)
        self.port = self.lsock.getsockname()[1]
        self.packets = []
        self.sent = []
        self.error = None
        self.extra = extra
        self.version = 4
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _reply(self, raw):
        t = raw[0] >> 4
        b = body_of(raw)
        v = self.version
        if t == 1:  # CONNECT: level at byte 6 of the body ("\0\4MQTT" then level)
            self.version = v = b[6]
            return h("20 02 00 00") if v == 4 else h("20 03 00 00 00")
        if t == 3:  # PUBLISH: QoS 1 -> PUBACK, QoS 2 -> PUBREC
            qos = (raw[0] >> 1) & 3
            if not qos:
                return b""
            tl = b[0] << 8 | b[1]
            pid = b[2 + tl:4 + tl]
            return (b"\x40\x02" if qos == 1 else b"\x50\x02") + pid
        if t == 5:  # PUBREC (to our QoS 2 PUBLISH) -> PUBREL
            return b"\x62\x02" + b[:2]
        if t == 6:  # PUBREL -> PUBCOMP
            return b"\x70\x02" + b[:2]
        if t == 8 or t == 10:  # SUBSCRIBE -> SUBACK, UNSUBSCRIBE -> UNSUBACK
            pid = b[:2]
            i = 2
            if v == 5:
                n, i = _varint(b, 2)
                i += n
            codes = bytearray()
            while i < len(b):
                fl = b[i] << 8 | b[i + 1]
                i += 2 + fl
                if t == 8:
                    codes.append(b[i] & 3)  # grant the requested QoS
                    i += 1
                else:
                    codes.append(0)
            if t == 8:
                return with_header(0x90, pid + (b"\x00" if v == 5 else b"") + codes)
            if v == 5:
                return with_header(0xB0, pid + b"\x00" + codes)
            return b"\xb0\x02" + pid
        if t == 12:
            return b"\xd0\x00"
        return b""

    def _run(self):
        try:
            conn, _ = self.lsock.accept()
            conn.settimeout(TIMEOUT)
            with conn:
                while True:
                    raw = read_packet(conn)
                    if raw is None:
                        break
                    self.packets.append(raw)
                    if raw[0] >> 4 == 14:
                        break
                    out = self._reply(raw)
                    if out:
                        framed(out)
                    if self.extra:
                        more = self.extra(raw, self.version)
                        if more:
                            out += framed(more)
                    if out:
                        self.sent.append(out)
                        conn.sendall(out)
        except Exception as e:  # reported by finish()
            self.error = e
        finally:
            self.lsock.close()

    def finish(self):
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "client did not finish"
        assert self.error is None, repr(self.error)
        return self.packets


# ---- decode and re-encode with the codec -------------------------------------

class Decoded:
    # A decoded packet with its buffer, for field checks.
    def __init__(self, raw, version):
        self.raw = raw
        self.buf = bytearray(raw)
        self.pkt = codec.Packet()
        self.type = codec.decode(self.pkt, self.buf, 0, len(self.buf), version)
        p = self.pkt
        if self.type == codec.CONNECT:
            self.version = p.connect.version
        else:
            self.version = version
        self.props = p.props
        if self.type == codec.PUBLISH:
            self.topic = bytes(self.buf[p.topic_off:p.topic_off + p.topic_len])
            self.payload = bytes(self.buf[p.payload_off:p.payload_off + p.payload_len])
            self.props = codec.publish_props(p, self.buf) if version == 5 else None
        elif codec.PUBACK <= self.type <= codec.PUBCOMP:
            self.props = None
            if p.props_end > p.props_off or len(raw) > 5:
                # ack properties: decode from the property length before props_off
                n = p.props_end - p.props_off
                off = p.props_off - wire.varint_size(n)
                self.props = P.decode(self.buf, off, p.props_end, self.type)[0]


def reencode(d):
    # Our encoding of the decoded fields.
    p = d.pkt
    v = d.version
    out = bytearray(len(d.raw) + 64)
    t = d.type
    if t == codec.CONNECT:
        c = p.connect
        n = codec.encode_connect(out, c.client_id, c.clean, c.keepalive, c.user, c.password,
                                 c.will, c.version, c.props)
    elif t == codec.CONNACK:
        n = codec.encode_connack(out, p.session_present, p.reason, v, p.props)
    elif t == codec.PUBLISH:
        n = codec.encode_publish(out, d.topic, d.payload, p.qos, p.retain, p.dup, p.pid, v, d.props)
    elif codec.PUBACK <= t <= codec.PUBCOMP:
        n = codec.encode_ack(out, t, p.pid, p.reason, v, d.props)
    elif t == codec.SUBSCRIBE:
        n = codec.encode_subscribe(out, p.pid, p.topics, v, p.props)
    elif t == codec.SUBACK:
        n = codec.encode_suback(out, p.pid, p.codes, v, p.props)
    elif t == codec.UNSUBSCRIBE:
        n = codec.encode_unsubscribe(out, p.pid, p.topics, v, p.props)
    elif t == codec.UNSUBACK:
        n = codec.encode_unsuback(out, p.pid, p.codes, v, p.props)
    elif t in (codec.PINGREQ, codec.PINGRESP):
        n = codec.encode_ping(out, t)
    elif t == codec.DISCONNECT:
        n = codec.encode_disconnect(out, p.reason, v, p.props)
    else:
        n = codec.encode_auth(out, p.reason, p.props)
    return bytes(out[:n])


def decode_all(packets, version=4):
    # Decode a client's packets in order (the version comes from its CONNECT),
    # and check each re-encodes to the same bytes.
    out = []
    for raw in packets:
        d = Decoded(raw, version)
        version = d.version
        assert reencode(d) == raw, "re-encoding %r gave %r" % (raw, reencode(d))
        out.append(d)
    return out


def types(ds):
    return [d.type for d in ds]


# ---- paho-mqtt clients ---------------------------------------------------------

class PahoRun:
    # A paho client driven step by step, each step waiting for its ack.
    def __init__(self, port, client_id, protocol, **kw):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=protocol, **kw)
        self.events = {}
        for name in ("connect", "subscribe", "unsubscribe"):
            self.events[name] = threading.Event()
        self.c.on_connect = lambda *a: self.events["connect"].set()
        self.c.on_subscribe = lambda *a: self.events["subscribe"].set()
        self.c.on_unsubscribe = lambda *a: self.events["unsubscribe"].set()
        self.port = port

    def wait(self, name):
        assert self.events[name].wait(TIMEOUT), name
        self.events[name].clear()


def test_paho_v311():
    rec = Recorder()
    r = PahoRun(rec.port, "paho4", mqtt.MQTTv311, clean_session=False)
    c = r.c
    c.username_pw_set("user", "pass")
    c.will_set("will/t", b"gone", qos=1, retain=True)
    c.connect("127.0.0.1", rec.port, keepalive=30)
    c.loop_start()
    try:
        r.wait("connect")
        c.subscribe([("a/+", 1), ("b/#", 2), ("c", 0)])
        r.wait("subscribe")
        c.publish("t/0", b"zero", qos=0)
        c.publish("t/1", b"one", qos=1, retain=True).wait_for_publish(TIMEOUT)
        c.publish("t/2", b"\x00\xfftwo", qos=2).wait_for_publish(TIMEOUT)
        c.unsubscribe(["a/+", "c"])
        r.wait("unsubscribe")
        c.disconnect()
    finally:
        c.loop_stop()
    ds = decode_all(rec.finish())
    assert types(ds) == [codec.CONNECT, codec.SUBSCRIBE, codec.PUBLISH, codec.PUBLISH,
                         codec.PUBLISH, codec.PUBREL, codec.UNSUBSCRIBE, codec.DISCONNECT]
    con = ds[0].pkt.connect
    assert (con.version, con.client_id, con.clean, con.keepalive) == (4, "paho4", False, 30)
    assert (con.user, con.password) == ("user", b"pass")
    w = con.will
    assert (w.topic, w.msg, w.qos, w.retain, w.props) == (b"will/t", b"gone", 1, True, None)
    assert ds[1].pkt.topics == [(b"a/+", 1), (b"b/#", 2), (b"c", 0)]
    assert ds[1].pkt.pid != 0
    p0, p1, p2 = ds[2], ds[3], ds[4]
    assert (p0.topic, p0.payload, p0.pkt.qos, p0.pkt.retain, p0.pkt.pid) == (b"t/0", b"zero", 0, False, 0)
    assert (p1.topic, p1.payload, p1.pkt.qos, p1.pkt.retain) == (b"t/1", b"one", 1, True)
    assert (p2.topic, p2.payload, p2.pkt.qos, p2.pkt.dup) == (b"t/2", b"\x00\xfftwo", 2, False)
    assert p1.pkt.pid and p2.pkt.pid and p1.pkt.pid != p2.pkt.pid
    assert ds[5].pkt.pid == p2.pkt.pid
    assert ds[6].pkt.topics == [b"a/+", b"c"]
    assert ds[7].pkt.reason == 0


def test_paho_v5():
    rec = Recorder()
    r = PahoRun(rec.port, "paho5", mqtt.MQTTv5)
    c = r.c
    cp = Properties(PacketTypes.CONNECT)
    cp.SessionExpiryInterval = 120
    cp.ReceiveMaximum = 10
    cp.MaximumPacketSize = 10000
    cp.TopicAliasMaximum = 5
    cp.RequestResponseInformation = 1
    cp.RequestProblemInformation = 0
    cp.UserProperty = [("k", "v"), ("k", "w")]
    wp = Properties(PacketTypes.WILLMESSAGE)
    wp.WillDelayInterval = 10
    wp.PayloadFormatIndicator = 1
    wp.MessageExpiryInterval = 3600
    wp.ContentType = "text/plain"
    wp.ResponseTopic = "will/reply"
    wp.CorrelationData = b"\x01\x02"
    wp.UserProperty = [("wk", "wv")]
    c.will_set("will/5", b"bye", qos=2, retain=False, properties=wp)
    c.username_pw_set("u5", None)
    c.connect("127.0.0.1", rec.port, keepalive=20, clean_start=True, properties=cp)
    c.loop_start()
    try:
        r.wait("connect")
        sp = Properties(PacketTypes.SUBSCRIBE)
        sp.SubscriptionIdentifier = 7
        sp.UserProperty = [("s", "1")]
        c.subscribe([("x/+", SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True,
                                             retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)),
                     ("y/#", SubscribeOptions(qos=2, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND))],
                    properties=sp)
        r.wait("subscribe")
        pp = Properties(PacketTypes.PUBLISH)
        pp.PayloadFormatIndicator = 1
        pp.MessageExpiryInterval = 30
        pp.ContentType = "application/json"
        pp.ResponseTopic = "reply/t"
        pp.CorrelationData = b"\xca\xfe"
        pp.UserProperty = [("a", "1"), ("a", "2"), ("\u00e9", "\u20ac")]
        c.publish("t/5", b'{"v": 1}', qos=1, properties=pp).wait_for_publish(TIMEOUT)
        c.publish("t/5", b"q2", qos=2, retain=True).wait_for_publish(TIMEOUT)
        c.publish("t/0", b"", qos=0)
        up = Properties(PacketTypes.UNSUBSCRIBE)
        up.UserProperty = [("u", "1")]
        c.unsubscribe(["x/+", "y/#"], properties=up)
        r.wait("unsubscribe")
        dp = Properties(PacketTypes.DISCONNECT)
        dp.SessionExpiryInterval = 0
        dp.ReasonString = "done"
        dp.UserProperty = [("d", "1")]
        c.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"),
                     properties=dp)
    finally:
        c.loop_stop()
    ds = decode_all(rec.finish())
    assert types(ds) == [codec.CONNECT, codec.SUBSCRIBE, codec.PUBLISH, codec.PUBLISH,
                         codec.PUBREL, codec.PUBLISH, codec.UNSUBSCRIBE, codec.DISCONNECT]
    con = ds[0].pkt.connect
    assert (con.version, con.client_id, con.clean, con.keepalive) == (5, "paho5", True, 20)
    assert (con.user, con.password) == ("u5", None)
    assert con.props == {P.SESSION_EXPIRY: 120, P.RECEIVE_MAXIMUM: 10, P.MAXIMUM_PACKET_SIZE: 10000,
                         P.TOPIC_ALIAS_MAXIMUM: 5, P.REQUEST_RESPONSE_INFO: 1,
                         P.REQUEST_PROBLEM_INFO: 0, P.USER_PROPERTY: [("k", "v"), ("k", "w")]}
    w = con.will
    assert (w.topic, w.msg, w.qos, w.retain) == (b"will/5", b"bye", 2, False)
    assert w.props == {P.WILL_DELAY: 10, P.PAYLOAD_FORMAT: 1, P.MESSAGE_EXPIRY: 3600,
                       P.CONTENT_TYPE: "text/plain", P.RESPONSE_TOPIC: "will/reply",
                       P.CORRELATION_DATA: b"\x01\x02", P.USER_PROPERTY: [("wk", "wv")]}
    sub = ds[1].pkt
    # x/+: QoS 1 | No Local | Retain As Published | Retain Handling 1; y/#: QoS 2 | RH 2
    assert sub.topics == [(b"x/+", 0x1D), (b"y/#", 0x22)]
    assert sub.props == {P.SUBSCRIPTION_ID: [7], P.USER_PROPERTY: [("s", "1")]}
    p1 = ds[2]
    assert (p1.topic, p1.payload, p1.pkt.qos, p1.pkt.retain) == (b"t/5", b'{"v": 1}', 1, False)
    assert p1.props == {P.PAYLOAD_FORMAT: 1, P.MESSAGE_EXPIRY: 30, P.CONTENT_TYPE: "application/json",
                        P.RESPONSE_TOPIC: "reply/t", P.CORRELATION_DATA: b"\xca\xfe",
                        P.USER_PROPERTY: [("a", "1"), ("a", "2"), ("\u00e9", "\u20ac")]}
    assert (p1.pkt.expiry, p1.pkt.pfi, p1.pkt.alias) == (30, 1, 0)
    p2 = ds[3]
    assert (p2.topic, p2.payload, p2.pkt.qos, p2.pkt.retain, p2.props) == (b"t/5", b"q2", 2, True, {})
    assert ds[4].pkt.pid == p2.pkt.pid and ds[4].pkt.reason == 0
    p0 = ds[5]
    assert (p0.topic, p0.payload, p0.pkt.qos) == (b"t/0", b"", 0)
    assert ds[6].pkt.topics == [b"x/+", b"y/#"]
    assert ds[6].pkt.props == {P.USER_PROPERTY: [("u", "1")]}
    disc = ds[7].pkt
    assert disc.reason == 0x04
    assert disc.props == {P.SESSION_EXPIRY: 0, P.REASON_STRING: "done", P.USER_PROPERTY: [("d", "1")]}


def test_paho_pingreq():
    # Keep alive 1 s: paho sends PINGREQ (c0 00) when idle; the server's
    # PINGRESP keeps it connected.
    rec = Recorder()
    r = PahoRun(rec.port, "ping4", mqtt.MQTTv311)
    c = r.c
    c.connect("127.0.0.1", rec.port, keepalive=1)
    c.loop_start()
    try:
        r.wait("connect")
        deadline = threading.Event()
        for _ in range(40):
            if any(p[0] == 0xC0 for p in rec.packets):
                break
            deadline.wait(0.1)
        c.disconnect()
    finally:
        c.loop_stop()
    ds = decode_all(rec.finish())
    assert codec.PINGREQ in types(ds)
    assert [d.raw for d in ds if d.type == codec.PINGREQ][0] == h("c0 00")
    assert types(ds)[-1] == codec.DISCONNECT


# ---- mosquitto_pub / mosquitto_sub ---------------------------------------------

def run_tool(args, rec):
    proc = subprocess.run(args, capture_output=True, timeout=TIMEOUT * 2)
    packets = rec.finish()
    assert proc.returncode == 0, proc.stderr
    return proc, packets


def test_mosquitto_pub_v311():
    rec = Recorder()
    _, packets = run_tool([MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(rec.port), "-V", "mqttv311",
                           "-i", "mpub4", "-u", "usr", "-P", "pw", "-k", "45", "-q", "2", "-r",
                           "--will-topic", "w/4", "--will-payload", "dead", "--will-qos", "1",
                           "--will-retain", "-t", "mp/4", "-m", "hello 4"], rec)
    ds = decode_all(packets)
    assert types(ds) == [codec.CONNECT, codec.PUBLISH, codec.PUBREL, codec.DISCONNECT]
    con = ds[0].pkt.connect
    assert (con.version, con.client_id, con.clean, con.keepalive) == (4, "mpub4", True, 45)
    assert (con.user, con.password) == ("usr", b"pw")
    assert (con.will.topic, con.will.msg, con.will.qos, con.will.retain) == (b"w/4", b"dead", 1, True)
    pub = ds[1]
    assert (pub.topic, pub.payload, pub.pkt.qos, pub.pkt.retain) == (b"mp/4", b"hello 4", 2, True)
    assert ds[2].pkt.pid == pub.pkt.pid


def test_mosquitto_pub_v5():
    rec = Recorder()
    _, packets = run_tool([
        MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(rec.port), "-V", "mqttv5", "-i", "mpub5",
        "-q", "1", "-t", "mp/5", "-m", "hello 5", "-x", "30",
        "-D", "connect", "receive-maximum", "7", "-D", "connect", "user-property", "ck", "cv",
        "-D", "connect", "maximum-packet-size", "2048",
        "-D", "publish", "user-property", "k", "v", "-D", "publish", "user-property", "k", "w",
        "-D", "publish", "content-type", "text/plain",
        "-D", "publish", "message-expiry-interval", "60",
        "-D", "publish", "response-topic", "re/5", "-D", "publish", "correlation-data", "c0",
        "-D", "publish", "payload-format-indicator", "1",
        "-D", "disconnect", "session-expiry-interval", "0",
        "--will-topic", "w/5", "--will-payload", "gone", "-D", "will", "content-type", "t/w",
        "-D", "will", "user-property", "wk", "wv"], rec)
    ds = decode_all(packets)
    assert types(ds) == [codec.CONNECT, codec.PUBLISH, codec.DISCONNECT]
    con = ds[0].pkt.connect
    assert (con.version, con.client_id, con.clean) == (5, "mpub5", True)
    assert con.props == {P.RECEIVE_MAXIMUM: 7, P.USER_PROPERTY: [("ck", "cv")],
                         P.MAXIMUM_PACKET_SIZE: 2048, P.SESSION_EXPIRY: 30}
    assert (con.will.topic, con.will.msg) == (b"w/5", b"gone")
    assert con.will.props == {P.CONTENT_TYPE: "t/w", P.USER_PROPERTY: [("wk", "wv")]}
    pub = ds[1]
    assert (pub.topic, pub.payload, pub.pkt.qos) == (b"mp/5", b"hello 5", 1)
    assert pub.props == {P.USER_PROPERTY: [("k", "v"), ("k", "w")], P.CONTENT_TYPE: "text/plain",
                         P.MESSAGE_EXPIRY: 60, P.RESPONSE_TOPIC: "re/5",
                         P.CORRELATION_DATA: b"c0", P.PAYLOAD_FORMAT: 1}
    assert (pub.pkt.expiry, pub.pkt.pfi) == (60, 1)
    assert ds[2].pkt.reason == 0 and ds[2].pkt.props == {P.SESSION_EXPIRY: 0}


def test_mosquitto_pub_v5_interleaved_properties():
    # libmosquitto writes properties in the order they were added; with a
    # User Property, then Content Type, then another User Property it sends
    # 26 03 26. Our property dicts hold the repeats of an id as one list, so
    # our encoder writes 26 26 03: a legitimate difference (the spec does not
    # order properties, and the order of the User Properties among themselves
    # is kept [MQTT-3.3.2-18]). Compare the decoded structures instead.
    rec = Recorder()
    _, packets = run_tool([MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(rec.port), "-V", "mqttv5",
                           "-i", "mpub5i", "-t", "mp/i", "-m", "x",
                           "-D", "publish", "user-property", "k", "1",
                           "-D", "publish", "content-type", "c",
                           "-D", "publish", "user-property", "k", "2"], rec)
    d = Decoded(packets[1], 5)
    assert d.props == {P.USER_PROPERTY: [("k", "1"), ("k", "2")], P.CONTENT_TYPE: "c"}
    assert _prop_ids(d) == [0x26, 0x03, 0x26]
    again = Decoded(reencode(d), 5)
    assert _prop_ids(again) == [0x26, 0x26, 0x03]
    assert len(again.raw) == len(d.raw)
    assert (again.topic, again.payload, again.pkt.qos, again.props) == (d.topic, d.payload, 0, d.props)


def _prop_ids(d):
    # Property identifiers of a decoded v5 PUBLISH in wire order, walked with
    # the spec's value sizes (independently of props.decode).
    sizes = {0x01: 1, 0x02: 4, 0x23: 2, 0x0B: -1}
    b = d.buf
    off = d.pkt.props_off
    ids = []
    while off < d.pkt.props_end:
        pid = b[off]
        ids.append(pid)
        off += 1
        n = sizes.get(pid, 0)
        if n > 0:
            off += n
        elif n < 0:
            off = _varint(b, off)[1]
        else:  # strings/binary, and a pair's second string
            off += 2 + (b[off] << 8 | b[off + 1])
            if pid == 0x26:
                off += 2 + (b[off] << 8 | b[off + 1])
    return ids


def test_mosquitto_sub_v311():
    # mosquitto_sub subscribes, gets one hand-written PUBLISH, acks it,
    # prints it and disconnects (-C 1).
    def extra(raw, v):
        if raw[0] >> 4 == 8:
            # PUBLISH QoS 1, topic "ms/4/a", packet id 0x0102, payload "hi 4"
            return h("32 0e 00 06 6d 73 2f 34 2f 61 01 02 68 69 20 34")
        return b""
    rec = Recorder(extra)
    proc, packets = run_tool([MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(rec.port), "-V", "mqttv311",
                              "-i", "msub4", "-c", "-k", "15", "-q", "1", "-t", "ms/4/+", "-t", "ms/#",
                              "-C", "1", "-W", str(TIMEOUT)], rec)
    assert proc.stdout == b"hi 4\n"
    ds = decode_all(packets)
    assert types(ds) == [codec.CONNECT, codec.SUBSCRIBE, codec.PUBACK, codec.DISCONNECT]
    con = ds[0].pkt.connect
    assert (con.client_id, con.clean, con.keepalive) == ("msub4", False, 15)
    assert ds[1].pkt.topics == [(b"ms/4/+", 1), (b"ms/#", 1)]
    assert ds[2].pkt.pid == 0x0102


def test_mosquitto_sub_v5():
    def extra(raw, v):
        if raw[0] >> 4 == 8:
            # PUBLISH QoS 2, topic "ms/5", packet id 9, properties: User
            # Property "a"="b" (7), Subscription Identifier 3 (2), Content
            # Type "c" (4) = 13 -> length 0x0d; payload "hi 5"; rl 6+2+14+4 = 26.
            return h("34 1a 00 04 6d 73 2f 35 00 09 0d 26 00 01 61 00 01 62 0b 03 03 00 01 63"
                     "68 69 20 35")
        return b""
    rec = Recorder(extra)
    proc, packets = run_tool([MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(rec.port), "-V", "mqttv5",
                              "-i", "msub5", "-q", "2", "-t", "ms/5", "-t", "other/+",
                              "-D", "subscribe", "subscription-identifier", "3",
                              "-D", "subscribe", "user-property", "sk", "sv",
                              "-D", "connect", "topic-alias-maximum", "4",
                              "-C", "1", "-W", str(TIMEOUT), "-F", "%t %p"], rec)
    assert proc.stdout == b"ms/5 hi 5\n"
    ds = decode_all(packets)
    assert types(ds) == [codec.CONNECT, codec.SUBSCRIBE, codec.PUBREC, codec.PUBCOMP,
                         codec.DISCONNECT]
    con = ds[0].pkt.connect
    assert (con.version, con.client_id) == (5, "msub5")
    assert con.props[P.TOPIC_ALIAS_MAXIMUM] == 4
    sub = ds[1].pkt
    assert sub.topics == [(b"ms/5", 2), (b"other/+", 2)]
    assert sub.props == {P.SUBSCRIPTION_ID: [3], P.USER_PROPERTY: [("sk", "sv")]}
    assert ds[2].pkt.pid == 9


def test_mosquitto_sub_unsubscribe_v5():
    # -U: mosquitto_sub sends one UNSUBSCRIBE per topic, with the
    # -D unsubscribe user property. A PUBLISH after the last UNSUBACK lets it
    # exit (-C 1) once every ack has arrived.
    def extra(raw, v):
        if raw[0] >> 4 == 10 and raw.endswith(b"older"):
            return h("30 07 00 02 6b 2f 00 68 69")  # PUBLISH QoS 0 "k/", no properties, "hi"
        return b""
    rec = Recorder(extra)
    proc, packets = run_tool([MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(rec.port), "-V", "mqttv5",
                              "-i", "munsub5", "-t", "k/#", "-U", "old/+", "-U", "older",
                              "-D", "unsubscribe", "user-property", "uk", "uv",
                              "-C", "1", "-W", str(TIMEOUT)], rec)
    assert proc.stdout == b"hi\n"
    ds = decode_all(packets)
    assert types(ds) == [codec.CONNECT, codec.SUBSCRIBE, codec.UNSUBSCRIBE, codec.UNSUBSCRIBE,
                         codec.DISCONNECT]
    assert ds[1].pkt.topics == [(b"k/#", 0)]
    u1, u2 = ds[2].pkt, ds[3].pkt
    assert (u1.topics, u2.topics) == ([b"old/+"], [b"older"])
    assert u1.props == u2.props == {P.USER_PROPERTY: [("uk", "uv")]}
    assert len({ds[1].pkt.pid, u1.pid, u2.pid}) == 3


# ---- what mosquitto (the broker) sends ------------------------------------------

@pytest.fixture
def broker(mosquitto_factory):
    # The harness's own mosquitto on a free loopback port (never a system
    # service), with limits that make a v5 CONNACK carry Server Keep Alive,
    # Maximum Packet Size and Receive Maximum properties.
    return mosquitto_factory(extra_conf="max_keepalive 60\n"
                                        "max_packet_size 100000\n"
                                        "max_inflight_messages 20\n").port


class Raw:
    # A raw socket to the broker: send hand-written bytes, read whole packets.
    def __init__(self, port, version):
        self.s = socket.create_connection(("127.0.0.1", port), TIMEOUT)
        self.s.settimeout(TIMEOUT)
        self.version = version

    def send(self, data):
        self.s.sendall(framed(data))

    def recv(self):
        raw = read_packet(self.s)
        assert raw is not None, "broker closed the connection"
        d = Decoded(raw, self.version)
        # Our encoding of what the broker sent is the same bytes.
        assert reencode(d) == raw, (raw, reencode(d))
        return d

    def closed(self):
        try:
            return self.s.recv(1) == b""
        except OSError:
            return True

    def close(self):
        self.s.close()


def connect4(cid):
    # CONNECT 3.1.1, clean session, keep alive 30, client id cid.
    c = cid.encode()
    return with_header(0x10, h("00 04 4d 51 54 54 04 02 00 1e") + bytes([0, len(c)]) + c)


def connect5(cid, props=b"", keepalive=30):
    c = cid.encode()
    return with_header(0x10, h("00 04 4d 51 54 54 05 02") + bytes([keepalive >> 8, keepalive & 0xFF,
                                                                    len(props)]) + props +
                       bytes([0, len(c)]) + c)


def publish(topic, payload, qos=0, pid=0, retain=False, props=None):
    # props None: 3.1.1; bytes: 5.0 property list body.
    t = topic.encode()
    body = bytes([0, len(t)]) + t
    if qos:
        body += bytes([pid >> 8, pid & 0xFF])
    if props is not None:
        body += bytes([len(props)]) + props
    return with_header(0x30 | qos << 1 | int(retain), body + payload)


def test_broker_v311(broker):
    sub = Raw(broker, 4)
    pub = Raw(broker, 4)
    try:
        sub.send(connect4("cap-sub4"))
        d = sub.recv()
        assert d.raw == h("20 02 00 00")
        assert (d.type, d.pkt.session_present, d.pkt.reason) == (codec.CONNACK, False, 0)
        pub.send(connect4("cap-pub4"))
        assert pub.recv().pkt.reason == 0
        # SUBSCRIBE pid 1: "cap4/+" QoS 2, "cap4/x/#" QoS 1, "cap4/r" QoS 0
        sub.send(h("82 1f 00 01 00 06 63 61 70 34 2f 2b 02 00 08 63 61 70 34 2f 78 2f 23 01"
                   "00 06 63 61 70 34 2f 72 00"))
        d = sub.recv()
        assert (d.type, d.pkt.pid, d.pkt.codes) == (codec.SUBACK, 1, b"\x02\x01\x00")
        # QoS 1 in: PUBACK to the publisher, PUBLISH QoS 1 to the subscriber.
        pub.send(publish("cap4/a", b"one", 1, 5))
        d = pub.recv()
        assert d.raw == h("40 02 00 05")
        d = sub.recv()
        assert (d.type, d.topic, d.payload, d.pkt.qos, d.pkt.retain, d.pkt.dup) == \
            (codec.PUBLISH, b"cap4/a", b"one", 1, False, False)
        sub.send(bytes([0x40, 2, d.pkt.pid >> 8, d.pkt.pid & 0xFF]))  # PUBACK it
        # QoS 2 in: PUBREC, then PUBREL -> PUBCOMP.
        pub.send(publish("cap4/b", b"two", 2, 6))
        d = pub.recv()
        assert (d.type, d.pkt.pid, d.raw) == (codec.PUBREC, 6, h("50 02 00 06"))
        pub.send(h("62 02 00 06"))
        d = pub.recv()
        assert (d.type, d.pkt.pid) == (codec.PUBCOMP, 6)
        # QoS 2 out: PUBLISH, we PUBREC, broker PUBRELs (flags 0010), we PUBCOMP.
        d = sub.recv()
        assert (d.topic, d.payload, d.pkt.qos) == (b"cap4/b", b"two", 2)
        pid = d.pkt.pid
        sub.send(bytes([0x50, 2, pid >> 8, pid & 0xFF]))
        d = sub.recv()
        assert (d.type, d.pkt.pid, d.raw[0]) == (codec.PUBREL, pid, 0x62)
        sub.send(bytes([0x70, 2, pid >> 8, pid & 0xFF]))
        # QoS 0, and a retained message delivered to a later subscription.
        pub.send(publish("cap4/c", b"zero"))
        d = sub.recv()
        assert (d.topic, d.payload, d.pkt.qos, d.pkt.pid) == (b"cap4/c", b"zero", 0, 0)
        pub.send(publish("cap4/ret", b"kept", 1, 7, retain=True))
        assert pub.recv().pkt.pid == 7
        d = sub.recv()  # live delivery: retain cleared [MQTT-3.3.1-9]
        assert (d.topic, d.pkt.retain) == (b"cap4/ret", False)
        sub.send(b"\x40\x02" + bytes([d.pkt.pid >> 8, d.pkt.pid & 0xFF]))
        sub.send(h("82 0b 00 02 00 06 63 61 70 34 2f 23 01"))  # SUBSCRIBE pid 2 "cap4/#" QoS 1
        d = sub.recv()
        assert (d.type, d.pkt.codes) == (codec.SUBACK, b"\x01")
        d = sub.recv()
        assert (d.topic, d.payload, d.pkt.retain, d.pkt.qos) == (b"cap4/ret", b"kept", True, 1)
        sub.send(b"\x40\x02" + bytes([d.pkt.pid >> 8, d.pkt.pid & 0xFF]))
        pub.send(publish("cap4/ret", b"", 0, retain=True))  # clear it
        d = sub.recv()
        assert (d.topic, d.payload) == (b"cap4/ret", b"")
        # UNSUBSCRIBE pid 3 "cap4/+" -> UNSUBACK; PINGREQ -> PINGRESP.
        sub.send(h("a2 0a 00 03 00 06 63 61 70 34 2f 2b"))
        d = sub.recv()
        assert (d.type, d.pkt.pid, d.raw) == (codec.UNSUBACK, 3, h("b0 02 00 03"))
        sub.send(h("c0 00"))
        d = sub.recv()
        assert (d.type, d.raw) == (codec.PINGRESP, h("d0 00"))
    finally:
        sub.close()
        pub.close()


def test_broker_v5(broker):
    sub = Raw(broker, 5)
    pub = Raw(broker, 5)
    try:
        # CONNECT 5.0 with an empty client id and keep alive 100 (over the
        # broker's max_keepalive 60); properties: Session Expiry 0, Receive
        # Maximum 5, Topic Alias Maximum 4, User Property "k"="v".
        sub.send(connect5("", h("11 00 00 00 00 21 00 05 22 00 04 26 00 01 6b 00 01 76"), 100))
        d = sub.recv()
        assert (d.type, d.pkt.session_present, d.pkt.reason) == (codec.CONNACK, False, 0)
        cp = d.props
        assert cp[P.SERVER_KEEPALIVE] == 60
        assert cp[P.MAXIMUM_PACKET_SIZE] == 100000
        assert cp[P.RECEIVE_MAXIMUM] == 20
        assert cp[P.TOPIC_ALIAS_MAXIMUM] == 10
        assert cp[P.ASSIGNED_CLIENT_ID].startswith("auto-")
        # Topic Alias Maximum 10 on the publisher's side too.
        pub.send(connect5("cap-pub5"))
        d = pub.recv()
        assert d.pkt.reason == 0 and d.props[P.TOPIC_ALIAS_MAXIMUM] == 10
        # SUBSCRIBE pid 1, Subscription Identifier 9, "cap5/+" QoS 2 + No Local
        # + Retain As Published (0x0e), "cap5/x" QoS 1 (0x01).
        sub.send(h("82 17 00 01 02 0b 09 00 06 63 61 70 35 2f 2b 0e 00 06 63 61 70 35 2f 78 01"))
        d = sub.recv()
        assert (d.type, d.pkt.pid, d.pkt.codes, d.props) == (codec.SUBACK, 1, b"\x02\x01", {})
        # PUBLISH QoS 1 with properties: User Properties a=1, a=2, Content
        # Type "ct", Message Expiry 100, Topic Alias 1 (sets alias 1 = cap5/a).
        props = h("26 00 01 61 00 01 31 26 00 01 61 00 01 32 03 00 02 63 74 02 00 00 00 64 23 00 01")
        pub.send(publish("cap5/a", b"p1", 1, 11, props=props))
        d = pub.recv()
        assert (d.type, d.pkt.pid, d.pkt.reason, d.raw) == (codec.PUBACK, 11, 0, h("40 02 00 0b"))
        d = sub.recv()
        assert (d.topic, d.payload, d.pkt.qos) == (b"cap5/a", b"p1", 1)
        assert d.props[P.USER_PROPERTY] == [("a", "1"), ("a", "2")]
        assert d.props[P.CONTENT_TYPE] == "ct"
        assert 0 < d.props[P.MESSAGE_EXPIRY] <= 100 and d.pkt.expiry == d.props[P.MESSAGE_EXPIRY]
        assert d.props[P.SUBSCRIPTION_ID] == [9]
        assert P.TOPIC_ALIAS not in d.props  # the broker resolves the alias per connection
        sub.send(bytes([0x40, 2, d.pkt.pid >> 8, d.pkt.pid & 0xFF]))
        # The same topic by alias alone (empty topic, Topic Alias 1), QoS 2.
        pub.send(publish("", b"p2", 2, 12, props=h("23 00 01")))
        d = pub.recv()
        assert (d.type, d.pkt.pid, d.raw) == (codec.PUBREC, 12, h("50 02 00 0c"))
        pub.send(h("62 02 00 0c"))
        d = pub.recv()
        assert (d.type, d.pkt.pid, d.pkt.reason) == (codec.PUBCOMP, 12, 0)
        d = sub.recv()
        assert (d.topic, d.payload, d.pkt.qos, d.props) == (b"cap5/a", b"p2", 2, {P.SUBSCRIPTION_ID: [9]})
        pid = d.pkt.pid
        sub.send(bytes([0x50, 2, pid >> 8, pid & 0xFF]))
        d = sub.recv()
        assert (d.type, d.pkt.pid, d.pkt.reason) == (codec.PUBREL, pid, 0)
        sub.send(bytes([0x70, 2, pid >> 8, pid & 0xFF]))
        # No subscriber: PUBACK with reason 0x10 No matching subscribers (the
        # short form without a property length).
        pub.send(publish("nobody/5", b"x", 1, 13, props=b""))
        d = pub.recv()
        assert (d.type, d.pkt.pid, d.pkt.reason, d.raw) == (codec.PUBACK, 13, 0x10, h("40 03 00 0d 10"))
        # UNSUBSCRIBE pid 2: "cap5/+" (subscribed) and "none" (not): codes 0x00, 0x11.
        sub.send(h("a2 11 00 02 00 00 06 63 61 70 35 2f 2b 00 04 6e 6f 6e 65"))
        d = sub.recv()
        assert (d.type, d.pkt.pid, d.pkt.codes) == (codec.UNSUBACK, 2, b"\x00\x11")
        sub.send(h("c0 00"))
        assert sub.recv().raw == h("d0 00")
        # DISCONNECT from us with a reason: the broker closes.
        sub.send(h("e0 01 00"))
        assert sub.closed()
    finally:
        sub.close()
        pub.close()


DISCONNECT_CASES = [
    # (what, packet, mosquitto's DISCONNECT reason, our decoder's verdict)
    ("QoS 3", h("36 06 00 01 74 00 01 00"), 0x81, 0x81),
    ("bad UTF-8 topic", h("30 06 00 02 c0 af 00 78"), 0x81, 0x81),
    ("empty topic, no alias", h("30 03 00 00 00"), 0x82, 0x82),
    # Topic Alias 11 over the Topic Alias Maximum 10 the broker granted: the
    # codec cannot know the maximum (the session checks it), so it accepts.
    ("alias over maximum", h("32 0b 00 01 74 00 01 03 23 00 0b 78 78"), 0x94, None),
    ("SUBSCRIBE flags 0000", h("80 07 00 01 00 00 01 61 00"), 0x81, 0x81),
    # Remaining length 100005 over max_packet_size 100000: the broker answers
    # from the fixed header alone (only the first bytes are sent).
    ("packet too large", h("30 a5 8d 06 00 01 74 00"), 0x95, None),
]


@pytest.mark.parametrize("name, bad, reason, ours", DISCONNECT_CASES,
                         ids=[c[0] for c in DISCONNECT_CASES])
def test_broker_v5_disconnects(broker, name, bad, reason, ours):
    # What mosquitto sends a v5 client that breaks the protocol: a
    # DISCONNECT with a reason code (short form e0 01 rc), which we decode
    # and re-encode to the same bytes; and what our decoder says of the packet.
    c = Raw(broker, 5)
    try:
        c.send(connect5("cap-bad"))
        assert c.recv().pkt.reason == 0
        c.s.sendall(bad)
        d = c.recv()
        assert d.type == codec.DISCONNECT
        assert d.pkt.reason == reason
        assert d.raw == bytes([0xE0, 1, reason])
        assert c.closed()
    finally:
        c.close()
    if name != "packet too large":
        try:
            codec.decode(codec.Packet(), bytearray(bad), 0, len(bad), 5)
            got = None
        except MQTTException as e:
            got = e.code
        assert got == ours
