# MQTT 5.0 properties against the specification's table (2.2.2.2, Table 2-4),
# written out again here by hand rather than read from props.SPEC: every
# identifier with a value of its type, in every packet type (allowed ones
# decode, the others are malformed 0x81), exact bytes each way, duplicates and
# zero values (0x82), booleans, truncations and bad UTF-8.
import unittest

try:
    from collections import OrderedDict
except ImportError:
    from ucollections import OrderedDict

from umqtt_full import props as P
from umqtt_full.errors import MQTTException

MALFORMED = 0x81
PROTOCOL_ERROR = 0x82

# Packet types as props' "where": the packet type number, 0 for Will Properties.
WILL, CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 0, 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH = 8, 9, 10, 11, 14, 15
WHERE = (WILL, CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE,
         SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH)
ACKS = (PUBACK, PUBREC, PUBREL, PUBCOMP)

# (identifier, type, where it may appear), MQTT 5.0 Table 2-4.
TABLE = (
    (0x01, "byte", (PUBLISH, WILL)),            # Payload Format Indicator
    (0x02, "u32", (PUBLISH, WILL)),             # Message Expiry Interval
    (0x03, "str", (PUBLISH, WILL)),             # Content Type
    (0x08, "str", (PUBLISH, WILL)),             # Response Topic
    (0x09, "bin", (PUBLISH, WILL)),             # Correlation Data
    (0x0B, "varint", (PUBLISH, SUBSCRIBE)),     # Subscription Identifier
    (0x11, "u32", (CONNECT, CONNACK, DISCONNECT)),  # Session Expiry Interval
    (0x12, "str", (CONNACK,)),                  # Assigned Client Identifier
    (0x13, "u16", (CONNACK,)),                  # Server Keep Alive
    (0x15, "str", (CONNECT, CONNACK, AUTH)),    # Authentication Method
    (0x16, "bin", (CONNECT, CONNACK, AUTH)),    # Authentication Data
    (0x17, "byte", (CONNECT,)),                 # Request Problem Information
    (0x18, "u32", (WILL,)),                     # Will Delay Interval
    (0x19, "byte", (CONNECT,)),                 # Request Response Information
    (0x1A, "str", (CONNACK,)),                  # Response Information
    (0x1C, "str", (CONNACK, DISCONNECT)),       # Server Reference
    (0x1F, "str", (CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK,
                   DISCONNECT, AUTH)),          # Reason String
    (0x21, "u16", (CONNECT, CONNACK)),          # Receive Maximum
    (0x22, "u16", (CONNECT, CONNACK)),          # Topic Alias Maximum
    (0x23, "u16", (PUBLISH,)),                  # Topic Alias
    (0x24, "byte", (CONNACK,)),                 # Maximum QoS
    (0x25, "byte", (CONNACK,)),                 # Retain Available
    (0x26, "pair", (CONNECT, CONNACK, PUBLISH, WILL, PUBACK, PUBREC, PUBREL, PUBCOMP,
                    SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH)),  # User Property
    (0x27, "u32", (CONNECT, CONNACK)),          # Maximum Packet Size
    (0x28, "byte", (CONNACK,)),                 # Wildcard Subscription Available
    (0x29, "byte", (CONNACK,)),                 # Subscription Identifier Available
    (0x2A, "byte", (CONNACK,)),                 # Shared Subscription Available
)

# A value of each type, its encoding (2.2.2.2 / 1.5), and its decoded form.
VALUES = {
    "byte": (1, "01"),
    "u16": (0x1234, "12 34"),                   # big-endian
    "u32": (0x12345678, "12 34 56 78"),
    "varint": (300, "ac 02"),                   # 300 = 0b10_0101100: 0x2c|0x80, 0x02
    "str": ("\u00e9", "00 02 c3 a9"),           # "é": length 2, UTF-8 c3 a9
    "bin": (b"\x00\xff", "00 02 00 ff"),        # any bytes, not UTF-8 checked
    "pair": (("k", "\u00e9"), "00 01 6b 00 02 c3 a9"),
}

# Properties that may appear more than once (3.3.2.3.7, 3.3.2.3.8 and the
# User Property everywhere); Subscription Identifier only in PUBLISH.
REPEATABLE = (0x26,)


def h(s):
    return bytes.fromhex("".join(s.split()))


def plist(body):
    # A property list: length (a one-byte varint here) then the properties.
    return bytes([len(body)]) + body


def decoded(pid, v):
    return [v] if pid in (0x26, 0x0B) else v


def dec(data, where):
    buf = bytearray(data)
    return P.decode(buf, 0, len(buf), where)


class Long:
    def __len__(self):
        return 65536


class Sink:
    # What scan() records into (a Packet has these attributes).
    props_off = props_end = alias = expiry = pfi = 0


class TestTable(unittest.TestCase):
    def test_ids_and_names(self):
        self.assertEqual(sorted(P.SPEC), [t[0] for t in TABLE])
        names = ((P.PAYLOAD_FORMAT, 0x01), (P.MESSAGE_EXPIRY, 0x02), (P.CONTENT_TYPE, 0x03),
                 (P.RESPONSE_TOPIC, 0x08), (P.CORRELATION_DATA, 0x09), (P.SUBSCRIPTION_ID, 0x0B),
                 (P.SESSION_EXPIRY, 0x11), (P.ASSIGNED_CLIENT_ID, 0x12),
                 (P.SERVER_KEEPALIVE, 0x13), (P.AUTH_METHOD, 0x15), (P.AUTH_DATA, 0x16),
                 (P.REQUEST_PROBLEM_INFO, 0x17), (P.WILL_DELAY, 0x18),
                 (P.REQUEST_RESPONSE_INFO, 0x19), (P.RESPONSE_INFO, 0x1A),
                 (P.SERVER_REFERENCE, 0x1C), (P.REASON_STRING, 0x1F), (P.RECEIVE_MAXIMUM, 0x21),
                 (P.TOPIC_ALIAS_MAXIMUM, 0x22), (P.TOPIC_ALIAS, 0x23), (P.MAXIMUM_QOS, 0x24),
                 (P.RETAIN_AVAILABLE, 0x25), (P.USER_PROPERTY, 0x26),
                 (P.MAXIMUM_PACKET_SIZE, 0x27), (P.WILDCARD_SUB_AVAILABLE, 0x28),
                 (P.SUB_ID_AVAILABLE, 0x29), (P.SHARED_SUB_AVAILABLE, 0x2A))
        for got, want in names:
            self.assertEqual(got, want)
        self.assertEqual(P.WILL, WILL)

    def test_every_property_everywhere(self):
        # Allowed: decodes to {id: value}; elsewhere: malformed [2.2.2.2].
        for pid, typ, allowed in TABLE:
            value, hx = VALUES[typ]
            data = plist(bytes([pid]) + h(hx))
            for where in WHERE:
                if where in allowed:
                    d, end = dec(data, where)
                    self.assertEqual(d, {pid: decoded(pid, value)})
                    self.assertEqual(end, len(data))
                else:
                    with self.assertRaises(MQTTException) as cm:
                        dec(data, where)
                    self.assertEqual(cm.exception.code, MALFORMED,
                                     "0x%02x in %d" % (pid, where))

    def test_encode_every_property(self):
        for pid, typ, _ in TABLE:
            value, hx = VALUES[typ]
            want = bytes([pid]) + h(hx)
            d = {pid: decoded(pid, value)}
            self.assertEqual(P.size(d), len(want))
            buf = bytearray(b"\xee" * 16)
            end = P.put(buf, 1, d, len(want))
            self.assertEqual(bytes(buf[1:end]), plist(want))
            self.assertEqual(buf[end], 0xEE)
            end = P.put_body(buf, 0, d)
            self.assertEqual(bytes(buf[:end]), want)
        # A lone Subscription Identifier may be an int as well as a list.
        buf = bytearray(8)
        self.assertEqual(bytes(buf[:P.put(buf, 0, {0x0B: 300}, 3)]), h("03 0b ac 02"))

    def test_unknown_ids(self):
        known = [t[0] for t in TABLE]
        for pid in range(0x80):
            if pid in known:
                continue
            for where in (WILL, CONNECT, PUBLISH, PUBACK, DISCONNECT):
                with self.assertRaises(MQTTException) as cm:
                    dec(plist(bytes([pid, 0])), where)
                self.assertEqual(cm.exception.code, MALFORMED)
            with self.assertRaises(MQTTException) as cm:
                P.size({pid: 0})
            self.assertEqual(cm.exception.code, MALFORMED)
        # An identifier is a one-byte varint in practice; a longer one is unknown.
        with self.assertRaises(MQTTException) as cm:
            dec(plist(h("81 00 01")), PUBLISH)
        self.assertEqual(cm.exception.code, MALFORMED)


class TestValues(unittest.TestCase):
    def test_several_in_order(self):
        # Every type in one list, with User Property and Subscription
        # Identifier repeated: order of the repeats is kept.
        body = h("01 00"                       # Payload Format Indicator 0
                 "02 00 00 0e 10"              # Message Expiry 3600
                 "03 00 0a 74 65 78 74 2f 70 6c 61 69 6e"  # Content Type "text/plain"
                 "08 00 03 72 2f 31"           # Response Topic "r/1"
                 "09 00 03 01 02 03"           # Correlation Data 01 02 03
                 "26 00 01 61 00 01 31"        # User Property a=1
                 "0b 01"                       # Subscription Identifier 1
                 "26 00 01 62 00 00"           # User Property b="" (empty value)
                 "26 00 01 61 00 01 32"        # User Property a=2 (same key again)
                 "0b ff ff ff 7f"              # Subscription Identifier 268435455 (maximum)
                 "23 00 01")                   # Topic Alias 1
        d, end = dec(plist(body), PUBLISH)
        self.assertEqual(end, 1 + len(body))
        self.assertEqual(d, {
            P.PAYLOAD_FORMAT: 0, P.MESSAGE_EXPIRY: 3600, P.CONTENT_TYPE: "text/plain",
            P.RESPONSE_TOPIC: "r/1", P.CORRELATION_DATA: b"\x01\x02\x03",
            P.USER_PROPERTY: [("a", "1"), ("b", ""), ("a", "2")],
            P.SUBSCRIPTION_ID: [1, 268435455], P.TOPIC_ALIAS: 1})
        # Encoding groups repeats under their id: the same properties, ids in
        # dict order, each list in its order.
        od = OrderedDict()
        od[P.PAYLOAD_FORMAT] = 0
        od[P.MESSAGE_EXPIRY] = 3600
        od[P.CONTENT_TYPE] = "text/plain"
        od[P.RESPONSE_TOPIC] = b"r/1"  # bytes are written as they are
        od[P.CORRELATION_DATA] = bytearray(b"\x01\x02\x03")
        od[P.USER_PROPERTY] = [("a", "1"), ("b", ""), ("a", "2")]
        od[P.SUBSCRIPTION_ID] = [1, 268435455]
        od[P.TOPIC_ALIAS] = 1
        want = h("01 00 02 00 00 0e 10 03 00 0a 74 65 78 74 2f 70 6c 61 69 6e 08 00 03 72 2f 31"
                 "09 00 03 01 02 03 26 00 01 61 00 01 31 26 00 01 62 00 00 26 00 01 61 00 01 32"
                 "0b 01 0b ff ff ff 7f 23 00 01")
        self.assertEqual(P.size(od), len(want))
        buf = bytearray(len(want) + 1)
        self.assertEqual(P.put(buf, 0, od, len(want)), len(want) + 1)
        self.assertEqual(bytes(buf), plist(want))

    def test_long_property_list(self):
        # A property length over 127 takes a two-byte varint.
        od = OrderedDict()
        od[P.REASON_STRING] = "r" * 150      # 1 + 2 + 150 = 153 bytes
        n = P.size(od)
        self.assertEqual(n, 153)
        buf = bytearray(200)
        end = P.put(buf, 0, od, n)
        self.assertEqual(bytes(buf[:5]), h("99 01 1f 00 96"))  # 153 = 0x19|0x80, 0x01
        self.assertEqual(end, 2 + 153)
        d, e = P.decode(buf, 0, end, DISCONNECT)
        self.assertEqual((d, e), ({P.REASON_STRING: "r" * 150}, end))

    def test_empty(self):
        self.assertEqual(P.size(None), 0)
        self.assertEqual(P.size({}), 0)
        buf = bytearray(b"\xee\xee")
        self.assertEqual(P.put(buf, 0, {}, 0), 1)
        self.assertEqual(bytes(buf), b"\x00\xee")
        self.assertEqual(dec(b"\x00", CONNECT), ({}, 1))

    def test_offsets(self):
        # decode/scan read only buf[off:end] and return offsets into buf.
        buf = bytearray(h("ff ff 03 23 00 05 ee"))
        d, end = P.decode(buf, 2, 6, PUBLISH)
        self.assertEqual((d, end), ({P.TOPIC_ALIAS: 5}, 6))
        s = Sink()
        self.assertEqual(P.scan(buf, 2, 6, PUBLISH, s), 6)
        self.assertEqual((s.props_off, s.props_end, s.alias), (3, 6, 5))

    def test_scan_records(self):
        body = h("02 00 00 00 3c 01 01 23 00 09 " + "26 00 01 6b 00 01 76")
        s = Sink()
        s.alias = 99
        self.assertEqual(P.scan(bytearray(plist(body)), 0, 1 + len(body), PUBLISH, s), 1 + len(body))
        self.assertEqual((s.expiry, s.pfi, s.alias), (60, 1, 9))
        self.assertEqual((s.props_off, s.props_end), (1, 1 + len(body)))
        # Nothing recorded: defaults (no alias, no expiry, unspecified format).
        s = Sink()
        self.assertEqual(P.scan(bytearray(b"\x00"), 0, 1, PUBLISH, s), 1)
        self.assertEqual((s.alias, s.expiry, s.pfi), (0, -1, 0))

    def test_binary_not_utf8_checked(self):
        d, _ = dec(plist(h("09 00 03 00 ed a0")), PUBLISH)
        self.assertEqual(d, {P.CORRELATION_DATA: b"\x00\xed\xa0"})
        d, _ = dec(plist(h("16 00 02 c0 af")), AUTH)
        self.assertEqual(d, {P.AUTH_DATA: b"\xc0\xaf"})


class TestRejections(unittest.TestCase):
    def rejects(self, body, where, code):
        with self.assertRaises(MQTTException) as cm:
            dec(plist(body), where)
        self.assertEqual(cm.exception.code, code)
        s = Sink()
        with self.assertRaises(MQTTException) as cm:
            P.scan(bytearray(plist(body)), 0, 1 + len(body), where, s)
        self.assertEqual(cm.exception.code, code)

    def test_duplicates(self):
        # Each property that may appear once, twice in a packet that allows it: 0x82.
        for pid, typ, allowed in TABLE:
            if pid in REPEATABLE:
                continue
            one = bytes([pid]) + h(VALUES[typ][1])
            for where in allowed:
                if pid == 0x0B and where == PUBLISH:
                    continue  # repeats in PUBLISH, tested below
                self.rejects(one + one, where, PROTOCOL_ERROR)
                # Not only when adjacent.
                self.rejects(one + h("26 00 00 00 00") + one, where, PROTOCOL_ERROR)
        # Subscription Identifier: repeats in PUBLISH (3.3.2.3.8), not in SUBSCRIBE.
        d, _ = dec(plist(h("0b 01 0b 02 0b 01")), PUBLISH)
        self.assertEqual(d, {P.SUBSCRIPTION_ID: [1, 2, 1]})
        self.rejects(h("0b 01 0b 02"), SUBSCRIBE, PROTOCOL_ERROR)
        # User Property repeats everywhere, identical pairs included.
        for where in TABLE[22][2]:
            d, _ = dec(plist(h("26 00 00 00 00 26 00 00 00 00")), where)
            self.assertEqual(d, {P.USER_PROPERTY: [("", ""), ("", "")]})

    def test_zero_values(self):
        # 0x82: Receive Maximum 0 (3.1.2.11.3, 3.2.2.3.3), Maximum Packet
        # Size 0 (3.1.2.11.4, 3.2.2.3.6), Topic Alias 0 (3.3.2.3.4),
        # Subscription Identifier 0 (3.8.2.1.2).
        self.rejects(h("21 00 00"), CONNECT, PROTOCOL_ERROR)
        self.rejects(h("21 00 00"), CONNACK, PROTOCOL_ERROR)
        self.rejects(h("27 00 00 00 00"), CONNECT, PROTOCOL_ERROR)
        self.rejects(h("27 00 00 00 00"), CONNACK, PROTOCOL_ERROR)
        self.rejects(h("23 00 00"), PUBLISH, PROTOCOL_ERROR)
        self.rejects(h("0b 00"), SUBSCRIBE, PROTOCOL_ERROR)
        self.rejects(h("0b 00"), PUBLISH, PROTOCOL_ERROR)
        # Zero is a fine value for these.
        for body, where in (("22 00 00", CONNECT), ("22 00 00", CONNACK), ("11 00 00 00 00", CONNECT),
                            ("02 00 00 00 00", PUBLISH), ("13 00 00", CONNACK),
                            ("18 00 00 00 00", WILL), ("24 00", CONNACK), ("01 00", PUBLISH)):
            d, _ = dec(plist(h(body)), where)
            self.assertEqual(list(d.values()), [0])

    def test_booleans(self):
        # Byte properties that may only be 0 or 1: 2 is a protocol error.
        for pid, where in ((0x01, PUBLISH), (0x01, WILL), (0x17, CONNECT), (0x19, CONNECT),
                           (0x24, CONNACK), (0x25, CONNACK), (0x28, CONNACK), (0x29, CONNACK),
                           (0x2A, CONNACK)):
            for v in (2, 0x80, 0xFF):
                self.rejects(bytes([pid, v]), where, PROTOCOL_ERROR)
            for v in (0, 1):
                d, _ = dec(plist(bytes([pid, v])), where)
                self.assertEqual(d, {pid: v})

    def test_truncated_values(self):
        # Each type with its value cut short inside the property list.
        for body, where in (("01", PUBLISH), ("13 00", CONNACK), ("11 00 00 00", CONNECT),
                            ("0b 80", SUBSCRIBE), ("0b ff ff ff", PUBLISH), ("03 00", PUBLISH),
                            ("03 00 02 61", PUBLISH), ("09 00 03 01 02", PUBLISH),
                            ("26 00 01 6b", CONNECT), ("26 00 01 6b 00", CONNECT),
                            ("26 00 01 6b 00 02 76", CONNECT), ("26 00", CONNECT)):
            self.rejects(h(body), where, MALFORMED)

    def test_list_longer_than_packet(self):
        # Property length past end: malformed, never a read past end.
        buf = bytearray(h("05 23 00 01") + b"\x00\x00")
        with self.assertRaises(MQTTException) as cm:
            P.decode(buf, 0, 4, PUBLISH)
        self.assertEqual(cm.exception.code, MALFORMED)
        with self.assertRaises(MQTTException) as cm:
            P.scan(buf, 0, 4, PUBLISH, Sink())
        self.assertEqual(cm.exception.code, MALFORMED)
        # No property length at all.
        with self.assertRaises(MQTTException) as cm:
            P.decode(buf, 0, 0, PUBLISH)
        self.assertEqual(cm.exception.code, MALFORMED)

    def test_bad_varints(self):
        # Non-minimal property length and Subscription Identifier [MQTT-1.5.5-1],
        # and a 5-byte one.
        for data in (h("80 00"), h("81 00 0b 01")):
            with self.assertRaises(MQTTException) as cm:
                dec(data, PUBLISH)
            self.assertEqual(cm.exception.code, MALFORMED)
        self.rejects(h("0b 81 00"), PUBLISH, MALFORMED)
        self.rejects(h("0b ff ff ff ff 01"), PUBLISH, MALFORMED)

    def test_bad_utf8(self):
        # Strings and both halves of a pair: surrogate, U+0000, overlong, truncated.
        for bad in ("ed a0 80", "00", "c0 af", "e2 82"):
            n = len(h(bad))
            s = "%02x %s" % (n, bad)
            self.rejects(h("03 00 " + s), PUBLISH, MALFORMED)
            self.rejects(h("1f 00 " + s), DISCONNECT, MALFORMED)
            self.rejects(h("26 00 " + s + " 00 00"), CONNECT, MALFORMED)
            self.rejects(h("26 00 00 00 " + s), CONNECT, MALFORMED)

    def test_encode_unknown_raises_before_writing(self):
        with self.assertRaises(MQTTException) as cm:
            P.size({P.CONTENT_TYPE: "t", 0x7F: 1})
        self.assertEqual(cm.exception.code, MALFORMED)
        # Strings over 65535 bytes cannot be encoded (a stand-in with that
        # length: 64K does not fit MicroPython's test heap twice).
        buf = bytearray(8)
        with self.assertRaises(MQTTException) as cm:
            P.put_body(buf, 0, {P.CORRELATION_DATA: Long()})
        self.assertEqual(cm.exception.code, MALFORMED)


if __name__ == "__main__":
    unittest.main()
