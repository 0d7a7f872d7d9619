# Packet codec against reference packets written out by hand from the MQTT
# 3.1.1 and 5.0 specifications (codec_vectors.py): every packet type CONNECT
# .. AUTH in both versions, every v5 property type, repeated user properties
# and subscription identifiers. Both directions: encode -> exact bytes (and a
# buffer one byte short -> 0x95 with the buffer untouched), and decode the
# reference bytes -> fields. Runs under pytest and the MicroPython Unix port.
import unittest

try:
    from codec_vectors import *  # noqa: F401,F403  (vectors and helpers)
except ImportError:  # pytest's importlib mode leaves tests/unit off sys.path
    import sys
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from codec_vectors import *  # noqa: F401,F403


class TestV311Encode(unittest.TestCase):
    def test_connect(self):
        check_encode(self, codec.encode_connect, V4_CONNECT_MIN, "abc", True, 60)
        check_encode(self, codec.encode_connect, V4_CONNECT_MIN, b"abc", clean=True,
                     keepalive=60, version=4)
        will = codec.Will("w/t", b"bye", 1, True)
        check_encode(self, codec.encode_connect, V4_CONNECT_FULL, "c1", False, 300, "u", b"pw", will)
        will = codec.Will(b"wt", b"wm", 1, False)
        check_encode(self, codec.encode_connect, V4_CONNECT_SPEC, "id", True, 10, "u", "p", will)

    def test_connect_password_needs_user(self):
        # [MQTT-3.1.2-22]: refused before anything is written.
        buf = bytearray(64)
        with self.assertRaises(ValueError):
            codec.encode_connect(buf, "c", True, 0, None, b"pw")
        self.assertEqual(buf, bytearray(64))

    def test_connack(self):
        check_encode(self, codec.encode_connack, V4_CONNACK, False, 0)
        check_encode(self, codec.encode_connack, V4_CONNACK_SP, True, 0, 4)
        check_encode(self, codec.encode_connack, V4_CONNACK_REFUSED, False, 5)

    def test_publish(self):
        check_encode(self, codec.encode_publish, V4_PUBLISH_Q0, b"a/b", b"hi")
        check_encode(self, codec.encode_publish, V4_PUBLISH_Q1, b"t", b"x", 1, True, True, 10)
        check_encode(self, codec.encode_publish, V4_PUBLISH_Q2, b"a/b", b"", qos=2, pid=10)
        # bytearray and memoryview sources are accepted as they are.
        check_encode(self, codec.encode_publish, V4_PUBLISH_Q0, bytearray(b"a/b"),
                     memoryview(b"xhix")[1:3])

    def test_acks(self):
        check_encode(self, codec.encode_ack, V4_PUBACK, codec.PUBACK, 10)
        check_encode(self, codec.encode_ack, V4_PUBREC, codec.PUBREC, 10)
        check_encode(self, codec.encode_ack, V4_PUBREL, codec.PUBREL, 10)
        check_encode(self, codec.encode_ack, V4_PUBCOMP, codec.PUBCOMP, 10)
        # 3.1.1 has no reason code: a reason is not written.
        check_encode(self, codec.encode_ack, V4_PUBACK, codec.PUBACK, 10, 0x80, 4)

    def test_subscribe(self):
        check_encode(self, codec.encode_subscribe, V4_SUBSCRIBE, 1, [("a/b", 1), (b"c/d", 2)])
        check_encode(self, codec.encode_subscribe, V4_SUBSCRIBE_WILD, 0x1234, [("a/+", 1), ("#", 0)])

    def test_suback(self):
        check_encode(self, codec.encode_suback, V4_SUBACK, 1, [0, 1, 2, 0x80])
        check_encode(self, codec.encode_suback, V4_SUBACK, 1, b"\x00\x01\x02\x80", 4)

    def test_unsubscribe(self):
        check_encode(self, codec.encode_unsubscribe, V4_UNSUBSCRIBE, 2, ["a/b", b"c/d"])

    def test_unsuback(self):
        check_encode(self, codec.encode_unsuback, V4_UNSUBACK, 2)
        check_encode(self, codec.encode_unsuback, V4_UNSUBACK, 2, [0x11], 4)  # no codes in 3.1.1

    def test_ping_disconnect(self):
        check_encode(self, codec.encode_ping, V4_PINGREQ)
        check_encode(self, codec.encode_ping, V4_PINGREQ, codec.PINGREQ)
        check_encode(self, codec.encode_ping, V4_PINGRESP, codec.PINGRESP)
        check_encode(self, codec.encode_disconnect, V4_DISCONNECT)
        # 3.1.1 DISCONNECT has no reason: it is always empty.
        check_encode(self, codec.encode_disconnect, V4_DISCONNECT, 0x04, 4)


class TestV311Decode(unittest.TestCase):
    def test_connect_min(self):
        pkt, _ = decode(self, V4_CONNECT_MIN)
        c = pkt.connect
        self.assertEqual(c.version, 4)
        self.assertTrue(c.clean)
        self.assertEqual(c.keepalive, 60)
        self.assertEqual(c.client_id, "abc")
        self.assertTrue(c.user is None)
        self.assertTrue(c.password is None)
        self.assertTrue(c.will is None)
        self.assertTrue(c.props is None)

    def test_connect_full(self):
        # The connection's version argument does not matter for CONNECT.
        for version in (4, 5):
            pkt, _ = decode(self, V4_CONNECT_FULL, version)
            c = pkt.connect
            self.assertEqual(c.version, 4)
            self.assertFalse(c.clean)
            self.assertEqual(c.keepalive, 300)
            self.assertEqual(c.client_id, "c1")
            self.assertEqual(c.user, "u")
            self.assertEqual(c.password, b"pw")
            self.assertEqual(c.will.topic, b"w/t")
            self.assertEqual(c.will.msg, b"bye")
            self.assertEqual(c.will.qos, 1)
            self.assertTrue(c.will.retain)
            self.assertTrue(c.will.props is None)

    def test_connect_spec(self):
        c = decode(self, V4_CONNECT_SPEC)[0].connect
        self.assertEqual((c.client_id, c.user, c.password), ("id", "u", b"p"))
        self.assertEqual((c.will.topic, c.will.msg, c.will.qos, c.will.retain), (b"wt", b"wm", 1, False))
        self.assertTrue(c.clean)

    def test_connack(self):
        pkt, _ = decode(self, V4_CONNACK)
        self.assertFalse(pkt.session_present)
        self.assertEqual(pkt.reason, 0)
        self.assertTrue(pkt.props is None)
        pkt, _ = decode(self, V4_CONNACK_SP)
        self.assertTrue(pkt.session_present)
        pkt, _ = decode(self, V4_CONNACK_REFUSED)
        self.assertEqual(pkt.reason, 5)

    def test_publish_q0(self):
        pkt, buf = decode(self, V4_PUBLISH_Q0)
        self.assertEqual((pkt.qos, pkt.dup, pkt.retain, pkt.pid), (0, False, False, 0))
        self.assertEqual(topic_of(pkt, buf), b"a/b")
        self.assertEqual(payload_of(pkt, buf), b"hi")
        self.assertEqual(pkt.topic_off, 3 + 4)  # offsets are into the caller's buffer
        self.assertEqual((pkt.alias, pkt.expiry, pkt.pfi), (0, -1, 0))

    def test_publish_q1(self):
        pkt, buf = decode(self, V4_PUBLISH_Q1)
        self.assertEqual((pkt.qos, pkt.dup, pkt.retain, pkt.pid), (1, True, True, 10))
        self.assertEqual(topic_of(pkt, buf), b"t")
        self.assertEqual(payload_of(pkt, buf), b"x")
        self.assertEqual(pkt.flags, 0x0B)

    def test_publish_q2(self):
        pkt, buf = decode(self, V4_PUBLISH_Q2)
        self.assertEqual((pkt.qos, pkt.dup, pkt.retain, pkt.pid), (2, False, False, 10))
        self.assertEqual(topic_of(pkt, buf), b"a/b")
        self.assertEqual(pkt.payload_len, 0)

    def test_reused_packet(self):
        # One Packet decodes one packet after another; nothing leaks across.
        pkt = codec.Packet()
        buf = bytearray(V4_PUBLISH_Q1)
        codec.decode(pkt, buf, 0, len(buf))
        buf = bytearray(V4_PUBLISH_Q0)
        codec.decode(pkt, buf, 0, len(buf))
        self.assertEqual((pkt.qos, pkt.dup, pkt.retain, pkt.pid), (0, False, False, 0))
        self.assertEqual(payload_of(pkt, buf), b"hi")

    def test_acks(self):
        for data, t in ((V4_PUBACK, codec.PUBACK), (V4_PUBREC, codec.PUBREC),
                        (V4_PUBREL, codec.PUBREL), (V4_PUBCOMP, codec.PUBCOMP)):
            pkt, _ = decode(self, data)
            self.assertEqual(pkt.type, t)
            self.assertEqual(pkt.pid, 10)
            self.assertEqual(pkt.reason, 0)

    def test_subscribe(self):
        pkt, _ = decode(self, V4_SUBSCRIBE)
        self.assertEqual(pkt.pid, 1)
        self.assertEqual(pkt.topics, [(b"a/b", 1), (b"c/d", 2)])
        self.assertTrue(pkt.props is None)
        pkt, _ = decode(self, V4_SUBSCRIBE_WILD)
        self.assertEqual(pkt.pid, 0x1234)
        self.assertEqual(pkt.topics, [(b"a/+", 1), (b"#", 0)])

    def test_suback(self):
        pkt, _ = decode(self, V4_SUBACK)
        self.assertEqual(pkt.pid, 1)
        self.assertEqual(pkt.codes, b"\x00\x01\x02\x80")

    def test_unsubscribe(self):
        pkt, _ = decode(self, V4_UNSUBSCRIBE)
        self.assertEqual(pkt.pid, 2)
        self.assertEqual(pkt.topics, [b"a/b", b"c/d"])

    def test_unsuback(self):
        pkt, _ = decode(self, V4_UNSUBACK)
        self.assertEqual(pkt.pid, 2)
        self.assertEqual(pkt.codes, b"")

    def test_ping_disconnect(self):
        self.assertEqual(decode(self, V4_PINGREQ)[0].type, codec.PINGREQ)
        self.assertEqual(decode(self, V4_PINGRESP)[0].type, codec.PINGRESP)
        pkt, _ = decode(self, V4_DISCONNECT)
        self.assertEqual((pkt.type, pkt.reason), (codec.DISCONNECT, 0))


class TestV5Encode(unittest.TestCase):
    def test_connect(self):
        check_encode(self, codec.encode_connect, V5_CONNECT_MIN, "abc", True, 60, version=5)
        will = codec.Will("w", "x", 2, False, WILL_PROPS)
        check_encode(self, codec.encode_connect, V5_CONNECT_FULL, "c", True, 65535, "u", b"p",
                     will, 5, CONNECT_PROPS)
        will = codec.Will("wt", "wm", 1)
        check_encode(self, codec.encode_connect, V5_CONNECT_SPEC, "id", True, 10, "u", b"p",
                     will, 5, {P.SESSION_EXPIRY: 10})
        check_encode(self, codec.encode_connect, V5_CONNECT_PW_ONLY, "", True, 0, None, b"p",
                     version=5)

    def test_connack(self):
        check_encode(self, codec.encode_connack, V5_CONNACK_MIN, False, 0, 5)
        check_encode(self, codec.encode_connack, V5_CONNACK_REFUSED, False, 0x87, 5, {})
        check_encode(self, codec.encode_connack, V5_CONNACK_FULL, True, 0, 5, CONNACK_PROPS)

    def test_publish(self):
        check_encode(self, codec.encode_publish, V5_PUBLISH_Q0, b"a/b", b"hi", version=5)
        check_encode(self, codec.encode_publish, V5_PUBLISH_Q1, b"t", b"x", 1, pid=5, version=5,
                     props=PUBLISH_PROPS, alias=3)
        # Topic Alias given as a property instead of the alias argument.
        props = od(*(list(PUBLISH_PROPS.items()) + [(P.TOPIC_ALIAS, 3)]))
        check_encode(self, codec.encode_publish, V5_PUBLISH_Q1, b"t", b"x", 1, pid=5, version=5,
                     props=props)
        check_encode(self, codec.encode_publish, V5_PUBLISH_ALIAS, b"", b"p", version=5, alias=7)
        check_encode(self, codec.encode_publish, V5_PUBLISH_Q2, b"t", b"", 2, True, pid=0x0102,
                     version=5)

    def test_acks(self):
        check_encode(self, codec.encode_ack, V5_PUBACK, codec.PUBACK, 1, 0, 5)
        check_encode(self, codec.encode_ack, V5_PUBACK_REASON, codec.PUBACK, 1, 0x10, 5)
        check_encode(self, codec.encode_ack, V5_PUBACK_PROPS, codec.PUBACK, 1, 0x97, 5,
                     od((P.REASON_STRING, "full"), (P.USER_PROPERTY, [("k", "v")])))
        check_encode(self, codec.encode_ack, V5_PUBREC, codec.PUBREC, 2, 0x80, 5)
        check_encode(self, codec.encode_ack, V5_PUBREL, codec.PUBREL, 2, 0x92, 5)
        check_encode(self, codec.encode_ack, V5_PUBCOMP, codec.PUBCOMP, 2, 0x92, 5)
        check_encode(self, codec.encode_ack, V5_PUBREL_PROPS, codec.PUBREL, 2, 0, 5,
                     {P.USER_PROPERTY: [("k", "v")]})

    def test_subscribe(self):
        opts1 = 1 | codec.NO_LOCAL | codec.RETAIN_AS_PUBLISHED | (2 << codec.RETAIN_HANDLING_SHIFT)
        opts2 = 2 | (1 << codec.RETAIN_HANDLING_SHIFT)
        self.assertEqual((opts1, opts2), (0x2D, 0x12))
        check_encode(self, codec.encode_subscribe, V5_SUBSCRIBE, 3, [("a/b", opts1), ("c", opts2)],
                     5, od((P.SUBSCRIPTION_ID, 5), (P.USER_PROPERTY, [("k", "v")])))
        # A Subscription Identifier given as a one-element list encodes the same.
        check_encode(self, codec.encode_subscribe, V5_SUBSCRIBE, 3, [("a/b", opts1), ("c", opts2)],
                     5, od((P.SUBSCRIPTION_ID, [5]), (P.USER_PROPERTY, [("k", "v")])))

    def test_suback_unsubscribe_unsuback(self):
        check_encode(self, codec.encode_suback, V5_SUBACK, 3, [1, 2, 0x8F], 5, {P.REASON_STRING: "r"})
        check_encode(self, codec.encode_unsubscribe, V5_UNSUBSCRIBE, 4, ["a/b", "c"], 5,
                     {P.USER_PROPERTY: [("k", "v")]})
        check_encode(self, codec.encode_unsuback, V5_UNSUBACK, 4, [0, 0x11], 5)

    def test_ping_disconnect_auth(self):
        check_encode(self, codec.encode_ping, V5_PINGREQ, codec.PINGREQ)
        check_encode(self, codec.encode_ping, V5_PINGRESP, codec.PINGRESP)
        check_encode(self, codec.encode_disconnect, V5_DISCONNECT, 0, 5)
        check_encode(self, codec.encode_disconnect, V5_DISCONNECT_REASON, 0x04, 5)
        check_encode(self, codec.encode_disconnect, V5_DISCONNECT_PROPS, 0x9C, 5, od(
            (P.SESSION_EXPIRY, 0), (P.REASON_STRING, "bye"), (P.SERVER_REFERENCE, "s"),
            (P.USER_PROPERTY, [("k", "v")])))
        check_encode(self, codec.encode_auth, V5_AUTH, 0)
        check_encode(self, codec.encode_auth, V5_AUTH_PROPS, 0x18, od(
            (P.AUTH_METHOD, "m"), (P.AUTH_DATA, b"\x01"), (P.REASON_STRING, "r"),
            (P.USER_PROPERTY, [("k", "v")])))


class TestV5Decode(unittest.TestCase):
    def test_connect_min(self):
        c = decode(self, V5_CONNECT_MIN)[0].connect
        self.assertEqual((c.version, c.clean, c.keepalive, c.client_id), (5, True, 60, "abc"))
        self.assertEqual(c.props, {})
        self.assertTrue(c.will is None)

    def test_connect_full(self):
        # A server decodes CONNECT before it knows the version: pass 4.
        c = decode(self, V5_CONNECT_FULL, 4)[0].connect
        self.assertEqual(c.version, 5)
        self.assertTrue(c.clean)
        self.assertEqual(c.keepalive, 65535)
        self.assertEqual(c.client_id, "c")
        self.assertEqual(c.user, "u")
        self.assertEqual(c.password, b"p")
        self.assertEqual(c.props, dict(CONNECT_PROPS))
        self.assertEqual((c.will.topic, c.will.msg, c.will.qos, c.will.retain), (b"w", b"x", 2, False))
        self.assertEqual(c.will.props, dict(WILL_PROPS))

    def test_connect_spec(self):
        c = decode(self, V5_CONNECT_SPEC)[0].connect
        self.assertEqual(c.props, {P.SESSION_EXPIRY: 10})
        self.assertEqual(c.will.props, {})
        self.assertEqual((c.will.topic, c.will.msg, c.will.qos), (b"wt", b"wm", 1))
        self.assertEqual((c.client_id, c.user, c.password, c.keepalive), ("id", "u", b"p", 10))

    def test_connect_password_only(self):
        c = decode(self, V5_CONNECT_PW_ONLY)[0].connect
        self.assertEqual((c.client_id, c.user, c.password), ("", None, b"p"))

    def test_connack(self):
        pkt, _ = decode(self, V5_CONNACK_MIN, 5)
        self.assertEqual((pkt.session_present, pkt.reason, pkt.props), (False, 0, {}))
        pkt, _ = decode(self, V5_CONNACK_REFUSED, 5)
        self.assertEqual(pkt.reason, 0x87)
        pkt, _ = decode(self, V5_CONNACK_FULL, 5)
        self.assertTrue(pkt.session_present)
        self.assertEqual(pkt.props, dict(CONNACK_PROPS))

    def test_publish_q0(self):
        pkt, buf = decode(self, V5_PUBLISH_Q0, 5)
        self.assertEqual((pkt.qos, pkt.dup, pkt.retain, pkt.pid), (0, False, False, 0))
        self.assertEqual(topic_of(pkt, buf), b"a/b")
        self.assertEqual(payload_of(pkt, buf), b"hi")
        self.assertEqual((pkt.alias, pkt.expiry, pkt.pfi), (0, -1, 0))
        self.assertEqual(codec.publish_props(pkt, buf), {})

    def test_publish_q1(self):
        pkt, buf = decode(self, V5_PUBLISH_Q1, 5)
        self.assertEqual((pkt.qos, pkt.dup, pkt.retain, pkt.pid), (1, False, False, 5))
        self.assertEqual(topic_of(pkt, buf), b"t")
        self.assertEqual(payload_of(pkt, buf), b"x")
        # scan() records what a receiver needs without allocating.
        self.assertEqual((pkt.alias, pkt.expiry, pkt.pfi), (3, 60, 1))
        self.assertEqual((pkt.props_off, pkt.props_end), (3 + 8, 3 + 8 + 45))
        want = dict(PUBLISH_PROPS)
        want[P.TOPIC_ALIAS] = 3
        self.assertEqual(codec.publish_props(pkt, buf), want)

    def test_publish_alias(self):
        pkt, buf = decode(self, V5_PUBLISH_ALIAS, 5)
        self.assertEqual(pkt.topic_len, 0)
        self.assertEqual(pkt.alias, 7)
        self.assertEqual(payload_of(pkt, buf), b"p")

    def test_publish_q2(self):
        pkt, buf = decode(self, V5_PUBLISH_Q2, 5)
        self.assertEqual((pkt.qos, pkt.dup, pkt.retain, pkt.pid), (2, False, True, 0x0102))
        self.assertEqual(pkt.payload_len, 0)
        self.assertEqual(codec.publish_props(pkt, buf), {})

    def test_acks(self):
        for data, t, pid, reason in ((V5_PUBACK, codec.PUBACK, 1, 0),
                                     (V5_PUBACK_REASON, codec.PUBACK, 1, 0x10),
                                     (V5_PUBACK_PROPS, codec.PUBACK, 1, 0x97),
                                     (V5_PUBREC, codec.PUBREC, 2, 0x80),
                                     (V5_PUBREL, codec.PUBREL, 2, 0x92),
                                     (V5_PUBCOMP, codec.PUBCOMP, 2, 0x92),
                                     (V5_PUBREL_PROPS, codec.PUBREL, 2, 0),
                                     (h("40 04 00 01 00 00"), codec.PUBACK, 1, 0)):
            pkt, buf = decode(self, data, 5)
            self.assertEqual((pkt.type, pkt.pid, pkt.reason), (t, pid, reason))
        # The ack's properties are validated and located (props_off..props_end).
        pkt, buf = decode(self, V5_PUBACK_PROPS, 5)
        self.assertEqual(bytes(buf[pkt.props_off:pkt.props_end]),
                         V5_PUBACK_PROPS[6:])

    def test_subscribe(self):
        pkt, _ = decode(self, V5_SUBSCRIBE, 5)
        self.assertEqual(pkt.pid, 3)
        self.assertEqual(pkt.props, {P.SUBSCRIPTION_ID: [5], P.USER_PROPERTY: [("k", "v")]})
        self.assertEqual(pkt.topics, [(b"a/b", 0x2D), (b"c", 0x12)])

    def test_suback(self):
        pkt, _ = decode(self, V5_SUBACK, 5)
        self.assertEqual((pkt.pid, pkt.codes, pkt.props), (3, b"\x01\x02\x8f", {P.REASON_STRING: "r"}))

    def test_unsubscribe(self):
        pkt, _ = decode(self, V5_UNSUBSCRIBE, 5)
        self.assertEqual((pkt.pid, pkt.topics), (4, [b"a/b", b"c"]))
        self.assertEqual(pkt.props, {P.USER_PROPERTY: [("k", "v")]})

    def test_unsuback(self):
        pkt, _ = decode(self, V5_UNSUBACK, 5)
        self.assertEqual((pkt.pid, pkt.codes, pkt.props), (4, b"\x00\x11", {}))

    def test_ping(self):
        self.assertEqual(decode(self, V5_PINGREQ, 5)[0].type, codec.PINGREQ)
        self.assertEqual(decode(self, V5_PINGRESP, 5)[0].type, codec.PINGRESP)

    def test_disconnect(self):
        pkt, _ = decode(self, V5_DISCONNECT, 5)
        self.assertEqual((pkt.reason, pkt.props), (0, None))
        pkt, _ = decode(self, V5_DISCONNECT_REASON, 5)
        self.assertEqual((pkt.reason, pkt.props), (0x04, None))
        # Reason with an explicit empty property list (the long form).
        pkt, _ = decode(self, h("e0 02 81 00"), 5)
        self.assertEqual((pkt.reason, pkt.props), (0x81, {}))
        pkt, _ = decode(self, V5_DISCONNECT_PROPS, 5)
        self.assertEqual(pkt.reason, 0x9C)
        self.assertEqual(pkt.props, {P.SESSION_EXPIRY: 0, P.REASON_STRING: "bye",
                                     P.SERVER_REFERENCE: "s", P.USER_PROPERTY: [("k", "v")]})

    def test_auth(self):
        pkt, _ = decode(self, V5_AUTH, 5)
        self.assertEqual((pkt.type, pkt.reason), (codec.AUTH, 0))
        pkt, _ = decode(self, V5_AUTH_PROPS, 5)
        self.assertEqual(pkt.reason, 0x18)
        self.assertEqual(pkt.props, {P.AUTH_METHOD: "m", P.AUTH_DATA: b"\x01",
                                     P.REASON_STRING: "r", P.USER_PROPERTY: [("k", "v")]})


# Variable byte integers: the spec's table (1.5.5 in 5.0, 2.2.3 in 3.1.1).


if __name__ == "__main__":
    unittest.main()
