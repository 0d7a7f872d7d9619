# Codec strictness: every decoder rejection with the reason code a receiver
# must answer with (truncations, trailing bytes, reserved bits, bad UTF-8,
# wildcards, property rules ...), and encoders refusing a short buffer before
# writing a byte. Reference packets come from codec_vectors.py (hand-written
# from the specifications); remaining-length boundaries are in
# test_codec_lengths.py.
import unittest

try:
    from codec_vectors import *  # noqa: F401,F403  (vectors and helpers)
except ImportError:  # pytest's importlib mode leaves tests/unit off sys.path
    import sys
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from codec_vectors import *  # noqa: F401,F403


def truncations(data, valid):
    # Every shorter body with the remaining length rewritten to match:
    # (packet, expected) where expected is None (still a valid packet) or
    # the reason code. valid maps body lengths to what they decode as.
    hl = 1 + wire.varint_size(codec.remaining_length(data, 0, len(data)))
    body = data[hl:]
    for n in range(len(body)):
        yield n, with_body(data[0], body[:n]), valid.get(n, MALFORMED)


class TestRejections(unittest.TestCase):
    def test_reserved_flags(self):
        # [MQTT-2.2.2-1] [MQTT-2.2.2-2]: each non-PUBLISH type with every wrong
        # flag nibble, on an otherwise valid packet.
        good = ((V4_CONNECT_MIN, 4, 0), (V4_CONNACK, 4, 0), (V4_PUBACK, 4, 0), (V4_PUBREC, 4, 0),
                (V4_PUBREL, 4, 2), (V4_PUBCOMP, 4, 0), (V4_SUBSCRIBE, 4, 2), (V4_SUBACK, 4, 0),
                (V4_UNSUBSCRIBE, 4, 2), (V4_UNSUBACK, 4, 0), (V4_PINGREQ, 4, 0),
                (V4_PINGRESP, 4, 0), (V4_DISCONNECT, 4, 0), (V5_AUTH_PROPS, 5, 0),
                (V5_DISCONNECT_PROPS, 5, 0), (V5_SUBSCRIBE, 5, 2))
        for data, version, flags in good:
            decode(self, data, version)
            for f in range(16):
                if f != flags:
                    bad = bytes([(data[0] & 0xF0) | f]) + data[1:]
                    rejects(self, bad, MALFORMED, version)

    def test_reserved_types(self):
        rejects(self, h("00 00"), MALFORMED)
        rejects(self, h("00 00"), MALFORMED, 5)
        rejects(self, V5_AUTH, MALFORMED, 4)  # AUTH does not exist in 3.1.1
        rejects(self, V5_AUTH_PROPS, MALFORMED, 4)

    def test_publish_flags(self):
        # [MQTT-3.3.1-4] QoS 3; [MQTT-3.3.1-2] DUP with QoS 0.
        rejects(self, h("36 05 00 01 74 00 01"), MALFORMED)
        rejects(self, h("36 06 00 01 74 00 01 00"), MALFORMED, 5)
        rejects(self, h("38 03 00 01 74"), MALFORMED)
        rejects(self, h("39 04 00 01 74 00"), MALFORMED, 5)

    def test_packet_id_zero(self):
        # [MQTT-2.3.1-1]
        rejects(self, h("32 05 00 01 74 00 00"), PROTOCOL_ERROR)
        rejects(self, h("34 06 00 01 74 00 00 00"), PROTOCOL_ERROR, 5)
        for first in (0x40, 0x50, 0x62, 0x70):
            rejects(self, bytes([first]) + h("02 00 00"), PROTOCOL_ERROR)
            rejects(self, bytes([first]) + h("03 00 00 10"), PROTOCOL_ERROR, 5)
        rejects(self, h("82 06 00 00 00 01 61 00"), PROTOCOL_ERROR)
        rejects(self, h("82 07 00 00 00 00 01 61 00"), PROTOCOL_ERROR, 5)
        rejects(self, h("a2 05 00 00 00 01 61"), PROTOCOL_ERROR)

    def test_bad_utf8_topic(self):
        # PUBLISH topic "a" + bad sequence: overlong '/', overlong 3-byte,
        # surrogate U+D800, truncated 3-byte, U+110000, 0xF5 lead, lone
        # continuation, U+0000.
        for bad in ("c0 af", "e0 80 af", "ed a0 80", "e2 82", "f4 90 80 80",
                    "f5 80 80 80", "80", "00", "c0 80"):
            topic = b"a" + h(bad)
            for version in (4, 5):
                body = bytes([0, len(topic)]) + topic + (b"\x00" if version == 5 else b"") + b"x"
                rejects(self, with_body(0x30, body), MALFORMED, version)
        # The same bytes in a CONNECT client id, user name, will topic,
        # and a SUBSCRIBE / UNSUBSCRIBE filter.
        rejects(self, h("10 0e 00 04 4d 51 54 54 04 02 00 00 00 02 ed a0"), MALFORMED)
        rejects(self, h("10 0e 00 04 4d 51 54 54 04 02 00 00 00 02 c0 af"), MALFORMED)
        rejects(self, h("10 11 00 04 4d 51 54 54 04 82 00 00 00 00 00 03 61 00 62"), MALFORMED)
        rejects(self, h("10 13 00 04 4d 51 54 54 04 06 00 00 00 00 00 02 c0 af 00 01 78"),
                MALFORMED)
        rejects(self, h("82 07 00 01 00 02 ed a0 00"), MALFORMED)
        rejects(self, h("a2 06 00 01 00 02 61 00"), MALFORMED)

    def test_wildcard_in_topic(self):
        for t in (b"a/+", b"+", b"#", b"a/#", b"a+b"):
            rejects(self, with_body(0x30, bytes([0, len(t)]) + t), TOPIC_INVALID)
            rejects(self, with_body(0x30, bytes([0, len(t)]) + t + b"\x00"), TOPIC_INVALID, 5)
        # Will topics are topic names too.
        rejects(self, h("10 13 00 04 4d 51 54 54 04 06 00 00 00 00 00 02 61 2b 00 01 78"),
                TOPIC_INVALID)

    def test_empty_topic(self):
        # 3.1.1: an empty topic name is invalid [MQTT-4.7.3-1].
        rejects(self, h("30 02 00 00"), TOPIC_INVALID)
        # 5.0: empty topic without a Topic Alias [MQTT-3.3.2-8]; with one it is fine.
        rejects(self, h("30 03 00 00 00"), PROTOCOL_ERROR, 5)
        rejects(self, h("30 08 00 00 05 02 00 00 00 3c"), PROTOCOL_ERROR, 5)  # Message Expiry only
        decode(self, V5_PUBLISH_ALIAS, 5)

    def test_invalid_filters(self):
        for f in (b"a/#/b", b"a#", b"a+", b"+a", b"#/a", b"", b"a/b#", b"##", b"a/+b/c"):
            sub4 = with_body(0x82, b"\x00\x01" + bytes([0, len(f)]) + f + b"\x00")
            rejects(self, sub4, FILTER_INVALID)
            sub5 = with_body(0x82, b"\x00\x01\x00" + bytes([0, len(f)]) + f + b"\x00")
            rejects(self, sub5, FILTER_INVALID, 5)
            unsub4 = with_body(0xA2, b"\x00\x01" + bytes([0, len(f)]) + f)
            rejects(self, unsub4, FILTER_INVALID)
            unsub5 = with_body(0xA2, b"\x00\x01\x00" + bytes([0, len(f)]) + f)
            rejects(self, unsub5, FILTER_INVALID, 5)
        # A bad filter after a good one still fails the packet.
        rejects(self, h("82 0b 00 01 00 01 61 00 00 02 61 23 00"), FILTER_INVALID)

    def test_empty_subscribe_unsubscribe(self):
        # [MQTT-3.8.3-3] [MQTT-3.10.3-2] at least one filter.
        rejects(self, h("82 02 00 01"), PROTOCOL_ERROR)
        rejects(self, h("82 03 00 01 00"), PROTOCOL_ERROR, 5)
        rejects(self, h("a2 02 00 01"), PROTOCOL_ERROR)
        rejects(self, h("a2 03 00 01 00"), PROTOCOL_ERROR, 5)
        # SUBACK without codes
        rejects(self, h("90 02 00 01"), PROTOCOL_ERROR)
        rejects(self, h("90 03 00 01 00"), PROTOCOL_ERROR, 5)

    def test_subscription_options(self):
        # 5.0: bits 6-7 reserved [MQTT-3.8.3-5]; retain handling 3 is a
        # protocol error; QoS 3 malformed. 3.1.1: bits 2-7 reserved [MQTT-3.8.3-4].
        for o, code in ((0x40, MALFORMED), (0x80, MALFORMED), (0x30, PROTOCOL_ERROR),
                        (0x03, MALFORMED)):
            rejects(self, h("82 07 00 01 00 00 01 61") + bytes([o]), code, 5)
        for o in (0x03, 0x04, 0x08, 0x10, 0x80):
            rejects(self, h("82 06 00 01 00 01 61") + bytes([o]), MALFORMED)
        # 3.1.1 SUBACK return codes other than 0, 1, 2, 0x80 [MQTT-3.9.3-2].
        rejects(self, h("90 03 00 01 03"), MALFORMED)
        rejects(self, h("90 03 00 01 8f"), MALFORMED)

    def test_connect_flags(self):
        base = bytearray(V4_CONNECT_MIN)  # flags at offset 9
        for flags, code in ((0x03, MALFORMED),  # reserved bit [MQTT-3.1.2-3]
                            (0x0A, MALFORMED),  # will QoS 1 without will flag [MQTT-3.1.2-11]
                            (0x12, MALFORMED),  # will QoS 2 without will flag
                            (0x22, MALFORMED),  # will retain without will flag [MQTT-3.1.2-13]
                            ):
            base[9] = flags
            rejects(self, base, code)
        # 3.1.1 password without user name [MQTT-3.1.2-22]; the same packet
        # as 5.0 (V5_CONNECT_PW_ONLY) is valid.
        rejects(self, h("10 0f 00 04 4d 51 54 54 04 42 00 00 00 00 00 01 70"), MALFORMED)
        # Will QoS 3 with a will [MQTT-3.1.2-12].
        rejects(self, h("10 13 00 04 4d 51 54 54 04 1e 00 00 00 01 63 00 01 74 00 01 78"),
                MALFORMED)
        # 5.0 the same reserved-bit and will rules.
        base = bytearray(V5_CONNECT_MIN)
        for flags in (0x03, 0x0A, 0x22):
            base[9] = flags
            rejects(self, base, MALFORMED)

    def test_connect_protocol(self):
        for level in (0, 3, 6, 0xFF):
            bad = bytearray(V4_CONNECT_MIN)
            bad[8] = level
            rejects(self, bad, UNSUPPORTED)
        # 3.1's "MQIsdp" name, and a wrong 4-letter name.
        rejects(self, h("10 11 00 06 4d 51 49 73 64 70 03 02 00 3c 00 03 61 62 63"), UNSUPPORTED)
        rejects(self, h("10 0f 00 04 4d 51 54 53 04 02 00 3c 00 03 61 62 63"), UNSUPPORTED)

    def test_truncated(self):
        # Every truncation of every reference packet, with the remaining
        # length rewritten to match, is malformed unless the shorter packet
        # is itself valid (marked per packet).
        cases = (
            (V4_CONNECT_MIN, 4, {}), (V4_CONNECT_FULL, 4, {}), (V4_CONNECT_SPEC, 4, {}),
            (V5_CONNECT_MIN, 5, {}), (V5_CONNECT_FULL, 5, {}), (V5_CONNECT_SPEC, 5, {}),
            (V4_CONNACK, 4, {}), (V5_CONNACK_FULL, 5, {}),
            (V4_PUBLISH_Q0, 4, {5: None, 6: None}),
            (V4_PUBLISH_Q1, 4, {5: None}),
            (V5_PUBLISH_Q0, 5, {6: None, 7: None}),
            (V5_PUBLISH_Q1, 5, {51: None}),
            (V5_PUBLISH_ALIAS, 5, {6: None}),
            (V4_PUBACK, 4, {}), (V4_PUBREL, 4, {}),
            (V5_PUBACK_PROPS, 5, {2: None, 3: None}),
            (V5_PUBREL_PROPS, 5, {2: None, 3: None}),
            (V4_SUBSCRIBE, 4, {2: PROTOCOL_ERROR, 8: None}),
            (V5_SUBSCRIBE, 5, {12: PROTOCOL_ERROR, 18: None}),
            (V4_SUBACK, 4, {2: PROTOCOL_ERROR, 3: None, 4: None, 5: None}),
            (V5_SUBACK, 5, {7: PROTOCOL_ERROR, 8: None, 9: None}),
            (V4_UNSUBSCRIBE, 4, {2: PROTOCOL_ERROR, 7: None}),
            (V5_UNSUBSCRIBE, 5, {10: PROTOCOL_ERROR, 15: None}),
            (V4_UNSUBACK, 4, {}), (V5_UNSUBACK, 5, {3: None, 4: None}),
            (V5_DISCONNECT_PROPS, 5, {0: None, 1: None}),
            (V5_AUTH_PROPS, 5, {0: None, 1: None}),
        )
        for data, version, valid in cases:
            for n, pkt_bytes, want in truncations(data, valid):
                pkt = codec.Packet()
                buf = bytearray(pkt_bytes)
                try:
                    codec.decode(pkt, buf, 0, len(buf), version)
                    got = None
                except MQTTException as e:
                    got = e.code
                self.assertEqual(got, want, "%r cut to %d body bytes" % (data, n))

    def test_truncated_frame(self):
        # A buffer that ends before the remaining length says: malformed,
        # never a read past end.
        for data in (V4_CONNECT_FULL, V5_CONNECT_FULL, V5_PUBLISH_Q1, V5_SUBSCRIBE, V4_PUBACK):
            for end in range(2, len(data)):
                buf = bytearray(data) + b"\x00" * 4  # bytes after end must not be read
                pkt = codec.Packet()
                with self.assertRaises(MQTTException) as cm:
                    codec.decode(pkt, buf, 0, end, 5 if data[0] == 0x32 else 4)
                self.assertEqual(cm.exception.code, MALFORMED)

    def test_trailing_bytes(self):
        # One extra byte in the body (remaining length adjusted).
        for data, version in ((V4_CONNECT_FULL, 4), (V5_CONNECT_FULL, 5), (V4_CONNACK, 4),
                              (V5_CONNACK_FULL, 5), (V4_PUBACK, 4), (V4_PUBREL, 4),
                              (V5_PUBACK_PROPS, 5), (V4_UNSUBACK, 4), (V4_PINGREQ, 4),
                              (V5_PINGRESP, 5), (V4_DISCONNECT, 4), (V5_DISCONNECT_PROPS, 5),
                              (V5_AUTH_PROPS, 5), (V4_SUBSCRIBE, 4), (V5_UNSUBSCRIBE, 5)):
            hl = 1 + wire.varint_size(codec.remaining_length(data, 0, len(data)))
            rejects(self, with_body(data[0], data[hl:] + b"\x01"), MALFORMED, version)
        # decode() given more bytes than the remaining length says is a
        # framing error too (a PUBLISH would otherwise take them as payload).
        for data in (V4_PUBLISH_Q0, V4_PUBACK):
            pkt = codec.Packet()
            buf = bytearray(data + b"\x00")
            with self.assertRaises(MQTTException) as cm:
                codec.decode(pkt, buf, 0, len(buf))
            self.assertEqual(cm.exception.code, MALFORMED)

    def test_v5_properties_in_packets(self):
        # Property not allowed for the packet type (0x81): Session Expiry in
        # PUBLISH, Topic Alias in CONNECT, Will Delay in CONNECT, Reason
        # String in SUBSCRIBE, Subscription Identifier in a Will, Topic Alias in PUBACK.
        rejects(self, h("30 09 00 01 74 05 11 00 00 00 01"), MALFORMED, 5)
        rejects(self, h("10 11 00 04 4d 51 54 54 05 02 00 00 03 23 00 01 00 01 63"), MALFORMED)
        rejects(self, h("10 13 00 04 4d 51 54 54 05 02 00 00 05 18 00 00 00 01 00 01 63"),
                MALFORMED)
        rejects(self, h("82 0b 00 01 04 1f 00 01 72 00 01 61 00"), MALFORMED, 5)
        rejects(self, h("10 16 00 04 4d 51 54 54 05 06 00 00 00 00 01 63 02 0b 01 00 01 74 00 00"),
                MALFORMED)
        rejects(self, h("40 07 00 01 00 03 23 00 01"), MALFORMED, 5)
        # Duplicates (0x82): Content Type twice in PUBLISH, Session Expiry
        # twice in CONNECT, Subscription Identifier twice in SUBSCRIBE,
        # Reason String twice in a PUBACK.
        rejects(self, h("30 0c 00 01 74 08 03 00 01 61 03 00 01 62"), PROTOCOL_ERROR, 5)
        rejects(self, h("10 18 00 04 4d 51 54 54 05 02 00 00 0a 11 00 00 00 01 11 00 00 00 01"
                        "00 01 63"), PROTOCOL_ERROR)
        rejects(self, h("82 0b 00 01 04 0b 01 0b 02 00 01 61 00"), PROTOCOL_ERROR, 5)
        rejects(self, h("40 0c 00 01 00 08 1f 00 01 61 1f 00 01 62"), PROTOCOL_ERROR, 5)
        # Zero values (0x82): Receive Maximum 0 in CONNECT, Maximum Packet
        # Size 0 in CONNACK, Topic Alias 0 in PUBLISH, Subscription Identifier 0.
        rejects(self, h("10 11 00 04 4d 51 54 54 05 02 00 00 03 21 00 00 00 01 63"), PROTOCOL_ERROR)
        rejects(self, h("20 08 00 00 05 27 00 00 00 00"), PROTOCOL_ERROR, 5)
        rejects(self, h("30 08 00 01 74 03 23 00 00 78"), PROTOCOL_ERROR, 5)
        rejects(self, h("82 09 00 01 02 0b 00 00 01 61 00"), PROTOCOL_ERROR, 5)
        # A property list longer than the packet, and a bad UTF-8 string property.
        rejects(self, h("30 06 00 01 74 09 01 01"), MALFORMED, 5)
        rejects(self, h("30 09 00 01 74 05 03 00 02 ed a0"), MALFORMED, 5)

    def test_v311_bodies(self):
        # 3.1.1 packets have no reason codes or properties.
        rejects(self, h("40 03 00 01 00"), MALFORMED)
        rejects(self, h("e0 01 00"), MALFORMED)
        rejects(self, h("b0 03 00 01 00"), MALFORMED)
        rejects(self, h("20 03 00 00 00"), MALFORMED)
        # 5.0 CONNACK must carry a property length.
        rejects(self, h("20 02 00 00"), MALFORMED, 5)
        # CONNACK flags other than session present [MQTT-3.2.2-1] (5.0: 3.2.2.1).
        rejects(self, h("20 02 02 00"), MALFORMED)
        rejects(self, h("20 03 80 00 00"), MALFORMED, 5)


class TestEncoderRefusals(unittest.TestCase):
    def test_every_encoder_checks_room_first(self):
        # check_encode above already does this for every reference packet;
        # here: an empty buffer, and buffers a few bytes short.
        calls = (
            (codec.encode_publish, (b"a/b", b"hi")),
            (codec.encode_publish, (b"t", b"x", 1, False, False, 5, 5, PUBLISH_PROPS, 3)),
            (codec.encode_ack, (codec.PUBREL, 2, 0x92, 5)),
            (codec.encode_ack, (codec.PUBACK, 1, 0x97, 5, {P.REASON_STRING: "full"})),
            (codec.encode_ping, ()),
            (codec.encode_connect, ("c", True, 30, "u", b"p", codec.Will("w", "x", 2, False,
                                                                         WILL_PROPS), 5, CONNECT_PROPS)),
            (codec.encode_connack, (True, 0, 5, CONNACK_PROPS)),
            (codec.encode_subscribe, (3, [("a/b", 1)], 5, {P.SUBSCRIPTION_ID: 5})),
            (codec.encode_suback, (3, [1, 2], 5)),
            (codec.encode_unsubscribe, (4, ["a/b"], 5)),
            (codec.encode_unsuback, (4, [0], 5)),
            (codec.encode_disconnect, (0x81, 5, {P.REASON_STRING: "x"})),
            (codec.encode_auth, (0x18, {P.AUTH_METHOD: "m"})),
        )
        for fn, args in calls:
            n = fn(bytearray(300), *args)
            for size in (0, 1, n // 2, n - 2, n - 1):
                buf = filled(size)
                with self.assertRaises(MQTTException) as cm:
                    fn(buf, *args)
                self.assertEqual(cm.exception.code, TOO_LARGE)
                self.assertEqual(bytes(buf), bytes([SENTINEL]) * size)

    def test_memoryview_target(self):
        # Encoders write into a memoryview of a larger buffer too.
        big = filled(32)
        n = codec.encode_publish(memoryview(big)[4:], b"a/b", b"hi")
        self.assertEqual(bytes(big[4:4 + n]), V4_PUBLISH_Q0)
        self.assertEqual(bytes(big[:4]), bytes([SENTINEL]) * 4)
        with self.assertRaises(MQTTException) as cm:
            codec.encode_publish(memoryview(big)[26:], b"a/b", b"hi")
        self.assertEqual(cm.exception.code, TOO_LARGE)


if __name__ == "__main__":
    unittest.main()
