# Reference packets for the codec tests, written out by hand from the MQTT
# 3.1.1 and 5.0 specifications (never produced by our encoder): each hex
# literal has a comment deriving its fields. Shared by test_codec.py (encode
# and decode of every packet) and test_codec_strict.py (boundaries and
# rejections); a module of its own so each test file compiles within the
# 128K heap of the MicroPython run.

try:
    from collections import OrderedDict
except ImportError:
    from ucollections import OrderedDict

from umqtt_full import codec, wire
from umqtt_full import props as P
from umqtt_full.errors import MQTTException

MALFORMED = 0x81
PROTOCOL_ERROR = 0x82
UNSUPPORTED = 0x84
FILTER_INVALID = 0x8F
TOPIC_INVALID = 0x90
TOO_LARGE = 0x95
SENTINEL = 0xEE


def h(s):
    # Hex with any whitespace between bytes.
    return bytes.fromhex("".join(s.split()))


def filled(n):
    # A buffer of n sentinel bytes (MicroPython's bytearray has no '*').
    return bytearray(bytes([SENTINEL]) * n)


def od(*pairs):
    # Properties with several ids are written in dict order; MicroPython's
    # dict is unordered, so tests that compare bytes pass an OrderedDict.
    return OrderedDict(pairs)


def check_encode(tc, fn, expected, *args, **kw):
    # Exact bytes, return value = length, nothing written past the packet;
    # then one byte too little buffer: 0x95 and the buffer is untouched.
    n = len(expected)
    buf = filled(n + 8)
    got = fn(buf, *args, **kw)
    tc.assertEqual(bytes(buf[:n]), expected)
    tc.assertEqual(got, n)
    tc.assertEqual(bytes(buf[n:]), bytes([SENTINEL]) * 8)
    small = filled(n - 1)
    with tc.assertRaises(MQTTException) as cm:
        fn(small, *args, **kw)
    tc.assertEqual(cm.exception.code, TOO_LARGE)
    tc.assertEqual(bytes(small), bytes([SENTINEL]) * (n - 1))


def decode(tc, data, version=4):
    # Decode data placed at an offset inside a larger buffer, with junk on
    # both sides, so offsets are exercised. Returns (pkt, buf).
    buf = bytearray(b"\xaa\xaa\xaa") + data + b"\xbb\xbb"
    end = 3 + len(data)
    rl = codec.remaining_length(buf, 3, end)
    tc.assertEqual(codec.packet_size(rl), len(data))
    pkt = codec.Packet()
    t = codec.decode(pkt, buf, 3, end, version)
    tc.assertEqual(t, data[0] >> 4)
    tc.assertEqual(pkt.type, t)
    return pkt, buf


def rejects(tc, data, code, version=4, framed=True):
    # framed: the remaining length matches the bytes given, so the failure
    # comes from the rule under test and not from the framing.
    if framed:
        rl = codec.remaining_length(data, 0, len(data))
        tc.assertEqual(codec.packet_size(rl), len(data))
    pkt = codec.Packet()
    buf = bytearray(data)
    with tc.assertRaises(MQTTException) as cm:
        codec.decode(pkt, buf, 0, len(buf), version)
    tc.assertEqual(cm.exception.code, code)


def topic_of(pkt, buf):
    return bytes(buf[pkt.topic_off:pkt.topic_off + pkt.topic_len])


def payload_of(pkt, buf):
    return bytes(buf[pkt.payload_off:pkt.payload_off + pkt.payload_len])


def with_body(first, body):
    # A packet with a fixed header computed by hand-checked wire.put_varint
    # (its bytes are tested against the spec table below).
    hdr = bytearray(5)
    n = wire.put_varint(hdr, 0, len(body))
    return bytes([first]) + bytes(hdr[:n]) + body


# ---------------------------------------------------------------------------
# Reference packets, MQTT 3.1.1
# ---------------------------------------------------------------------------

# CONNECT, 3.1.1, client "abc", clean session, keep alive 60.
V4_CONNECT_MIN = h(
    "10 0f"                 # type 1 flags 0; remaining length 15
    "00 04 4d 51 54 54"     # protocol name "MQTT" (3.1.2.1)
    "04"                    # protocol level 4 (3.1.2.2)
    "02"                    # connect flags: clean session (bit 1)
    "00 3c"                 # keep alive 60
    "00 03 61 62 63")       # client id "abc"

# CONNECT, 3.1.1, every field: client "c1", no clean session, keep alive 300,
# will "w/t"/"bye" QoS 1 retained, user "u", password "pw".
V4_CONNECT_FULL = h(
    "10 1f"                 # remaining length 10 + 4 + 5 + 5 + 3 + 4 = 31
    "00 04 4d 51 54 54 04"  # "MQTT", level 4
    "ec"                    # 1110 1100: user, password, will retain, will QoS 01, will flag, clean 0
    "01 2c"                 # keep alive 300 (both bytes in use)
    "00 02 63 31"           # client id "c1"
    "00 03 77 2f 74"        # will topic "w/t"
    "00 03 62 79 65"        # will message "bye"
    "00 01 75"              # user name "u"
    "00 02 70 77")          # password "pw"

# CONNECT, 3.1.1, with the spec's variable header example (Figure 3.6:
# name MQTT, level 4, flags 0xCE = user, password, will QoS 1, will, clean;
# keep alive 10) and a payload "id", will "wt"/"wm", user "u", password "p".
V4_CONNECT_SPEC = h(
    "10 1c"                 # 10 + 4 + 4 + 4 + 3 + 3 = 28
    "00 04 4d 51 54 54 04 ce 00 0a"
    "00 02 69 64"           # client id "id"
    "00 02 77 74"           # will topic "wt"
    "00 02 77 6d"           # will message "wm"
    "00 01 75"              # user "u"
    "00 01 70")             # password "p"

V4_CONNACK = h("20 02 00 00")          # session present 0, return code 0 accepted
V4_CONNACK_SP = h("20 02 01 00")       # session present 1
V4_CONNACK_REFUSED = h("20 02 00 05")  # return code 5 not authorized

# PUBLISH QoS 0, topic "a/b", payload "hi".
V4_PUBLISH_Q0 = h("30 07 00 03 61 2f 62 68 69")  # rl = 2 + 3 + 2
# PUBLISH DUP, QoS 1, RETAIN: flags 1011; topic "t", packet id 10, payload "x".
V4_PUBLISH_Q1 = h("3b 06 00 01 74 00 0a 78")  # rl = 3 + 2 + 1
# PUBLISH QoS 2 (flags 0100), the spec's variable header example (Figure 3.11:
# topic "a/b", packet id 10) and an empty payload.
V4_PUBLISH_Q2 = h("34 07 00 03 61 2f 62 00 0a")

V4_PUBACK = h("40 02 00 0a")   # type 4, rl 2, packet id 10
V4_PUBREC = h("50 02 00 0a")   # type 5
V4_PUBREL = h("62 02 00 0a")   # type 6 with its reserved flags 0010
V4_PUBCOMP = h("70 02 00 0a")  # type 7

# SUBSCRIBE, packet id 1, the spec's payload example (Figure 3.22):
# "a/b" QoS 1, "c/d" QoS 2. Fixed header flags 0010.
V4_SUBSCRIBE = h(
    "82 0e"                 # rl = 2 + 6 + 6 = 14
    "00 01"                 # packet id 1
    "00 03 61 2f 62 01"     # "a/b", requested QoS 1
    "00 03 63 2f 64 02")    # "c/d", requested QoS 2
# SUBSCRIBE with wildcards: packet id 0x1234, "a/+" QoS 1, "#" QoS 0.
V4_SUBSCRIBE_WILD = h("82 0c 12 34 00 03 61 2f 2b 01 00 01 23 00")
# SUBACK, packet id 1, the spec's return codes example (Figure 3.26):
# 0x00, 0x01, 0x02, 0x80 (failure).
V4_SUBACK = h("90 06 00 01 00 01 02 80")
# UNSUBSCRIBE, packet id 2, the spec's payload example (Figure 3.30): "a/b", "c/d".
V4_UNSUBSCRIBE = h("a2 0c 00 02 00 03 61 2f 62 00 03 63 2f 64")
V4_UNSUBACK = h("b0 02 00 02")  # packet id 2, no payload in 3.1.1
V4_PINGREQ = h("c0 00")
V4_PINGRESP = h("d0 00")
V4_DISCONNECT = h("e0 00")

# ---------------------------------------------------------------------------
# Reference packets, MQTT 5.0
# ---------------------------------------------------------------------------

U_KV = "26 00 01 6b 00 01 76"  # User Property (0x26) "k" = "v": 7 bytes

# CONNECT, 5.0, client "abc", clean start, keep alive 60, no properties.
V5_CONNECT_MIN = h(
    "10 10"                 # rl = 10 + 1 + 5
    "00 04 4d 51 54 54 05"  # "MQTT", level 5
    "02 00 3c"              # clean start, keep alive 60
    "00"                    # property length 0
    "00 03 61 62 63")       # client id "abc"

# CONNECT, 5.0, every CONNECT property and every Will property.
V5_CONNECT_FULL = h(
    "10 5e"                 # rl = 10 + 37 + 3 + 32 + 3 + 3 + 3 + 3 = 94
    "00 04 4d 51 54 54 05"
    "d6"                    # 1101 0110: user, password, will QoS 2, will flag, clean start
    "ff ff"                 # keep alive 65535, the maximum
    "24"                    # property length 36:
    "11 00 00 00 78"        #   Session Expiry Interval (u32) 120
    "21 00 14"              #   Receive Maximum (u16) 20
    "27 00 00 04 00"        #   Maximum Packet Size (u32) 1024
    "22 00 0a"              #   Topic Alias Maximum (u16) 10
    "19 01"                 #   Request Response Information (byte) 1
    "17 00"                 #   Request Problem Information (byte) 0
    + U_KV +                #   User Property "k" "v"
    "15 00 01 6d"           #   Authentication Method (UTF-8) "m"
    "16 00 02 01 02"        #   Authentication Data (binary) 01 02
    "00 01 63"              # client id "c"
    "1f"                    # will property length 31:
    "18 00 00 00 05"        #   Will Delay Interval (u32) 5
    "01 01"                 #   Payload Format Indicator (byte) 1
    "02 00 00 00 3c"        #   Message Expiry Interval (u32) 60
    "03 00 01 74"           #   Content Type "t"
    "08 00 01 72"           #   Response Topic "r"
    "09 00 01 63"           #   Correlation Data (binary) "c"
    "26 00 01 61 00 01 62"  #   User Property "a" "b"
    "00 01 77"              # will topic "w"
    "00 01 78"              # will payload "x"
    "00 01 75"              # user "u"
    "00 01 70")             # password "p"

# CONNECT, 5.0, the spec's variable header example (Figure 3.6: level 5,
# flags 0xCE, keep alive 10, properties length 5, Session Expiry Interval 10),
# payload client "id", empty will properties, will "wt"/"wm", user "u", password "p".
V5_CONNECT_SPEC = h(
    "10 23"                 # rl = 10 + 6 + 4 + 1 + 4 + 4 + 3 + 3 = 35
    "00 04 4d 51 54 54 05 ce 00 0a"
    "05 11 00 00 00 0a"     # properties: Session Expiry Interval 10
    "00 02 69 64"           # client id "id"
    "00"                    # will property length 0
    "00 02 77 74 00 02 77 6d 00 01 75 00 01 70")

# CONNECT, 5.0: a password without a user name is allowed in 5.0 (3.1.2.9).
V5_CONNECT_PW_ONLY = h("10 10 00 04 4d 51 54 54 05 42 00 00 00 00 00 00 01 70")
#                      flags 0100 0010: password, clean start; keep alive 0;
#                      props 0; client id ""; password "p"

V5_CONNACK_MIN = h("20 03 00 00 00")      # flags 0, reason 0, property length 0
V5_CONNACK_REFUSED = h("20 03 00 87 00")  # reason 0x87 Not authorized

# CONNACK, 5.0, session present, every CONNACK property.
V5_CONNACK_FULL = h(
    "20 41"                 # rl = 2 + 1 + 62 = 65
    "01 00"                 # session present, reason 0
    "3e"                    # property length 62:
    "11 00 00 00 3c"        #   Session Expiry Interval 60
    "21 00 0a"              #   Receive Maximum 10
    "24 01"                 #   Maximum QoS 1
    "25 00"                 #   Retain Available 0
    "27 00 00 10 00"        #   Maximum Packet Size 4096
    "12 00 02 69 64"        #   Assigned Client Identifier "id"
    "22 00 05"              #   Topic Alias Maximum 5
    "1f 00 02 6f 6b"        #   Reason String "ok"
    + U_KV +                #   User Property "k" "v"
    "28 01"                 #   Wildcard Subscription Available 1
    "29 01"                 #   Subscription Identifiers Available 1
    "2a 00"                 #   Shared Subscription Available 0
    "13 00 1e"              #   Server Keep Alive 30
    "1a 00 01 72"           #   Response Information "r"
    "1c 00 01 73"           #   Server Reference "s"
    "15 00 01 6d"           #   Authentication Method "m"
    "16 00 01 64")          #   Authentication Data "d"

# PUBLISH QoS 0, topic "a/b", no properties, payload "hi".
V5_PUBLISH_Q0 = h("30 08 00 03 61 2f 62 00 68 69")  # rl = 5 + 1 + 2
# PUBLISH QoS 1, topic "t", packet id 5, every PUBLISH property, payload "x".
V5_PUBLISH_Q1 = h(
    "32 34"                 # QoS 1; rl = 3 + 2 + 1 + 45 + 1 = 52
    "00 01 74"              # topic "t"
    "00 05"                 # packet id 5
    "2d"                    # property length 45:
    "01 01"                 #   Payload Format Indicator 1
    "02 00 00 00 3c"        #   Message Expiry Interval 60
    "03 00 04 74 65 78 74"  #   Content Type "text"
    "08 00 01 72"           #   Response Topic "r"
    "09 00 02 ab cd"        #   Correlation Data ab cd
    "26 00 01 61 00 01 31"  #   User Property "a" "1"
    "26 00 01 61 00 01 32"  #   User Property "a" "2" (repeated, order kept)
    "0b 01"                 #   Subscription Identifier 1
    "0b 80 01"              #   Subscription Identifier 128 (two-byte varint, repeated)
    "23 00 03"              #   Topic Alias 3
    "78")                   # payload "x"
# PUBLISH QoS 0 with a Topic Alias and an empty topic (3.3.2.3.4).
V5_PUBLISH_ALIAS = h("30 07 00 00 03 23 00 07 70")  # topic "", props [alias 7], payload "p"
# PUBLISH QoS 2 retained, topic "t", packet id 0x0102, no properties, empty payload.
V5_PUBLISH_Q2 = h("35 06 00 01 74 01 02 00")

V5_PUBACK = h("40 02 00 01")          # reason 0 and no properties: both left out (3.4.2.1)
V5_PUBACK_REASON = h("40 03 00 01 10")  # reason 0x10 No matching subscribers, no property length
V5_PUBACK_PROPS = h(
    "40 12"                 # rl = 2 + 1 + 1 + 14
    "00 01 97"              # packet id 1, reason 0x97 Quota exceeded
    "0e"                    # property length 14:
    "1f 00 04 66 75 6c 6c"  #   Reason String "full"
    + U_KV)                 #   User Property
V5_PUBREC = h("50 03 00 02 80")    # reason 0x80 Unspecified error
V5_PUBREL = h("62 03 00 02 92")    # reason 0x92 Packet Identifier not found
V5_PUBCOMP = h("70 03 00 02 92")
V5_PUBREL_PROPS = h("62 0b 00 02 00 07" + U_KV)  # reason 0 with properties: reason kept

# SUBSCRIBE, 5.0, packet id 3, Subscription Identifier 5 and a user
# property; "a/b" with QoS 1 + No Local + Retain As Published + Retain
# Handling 2 (0010 1101 = 0x2d), "c" with QoS 2 + Retain Handling 1 (0x12).
V5_SUBSCRIBE = h(
    "82 16"                 # rl = 2 + 1 + 9 + 6 + 4 = 22
    "00 03"                 # packet id 3
    "09 0b 05" + U_KV +     # property length 9: Subscription Identifier 5, User Property
    "00 03 61 2f 62 2d"
    "00 01 63 12")
# SUBACK, 5.0: packet id 3, Reason String "r", codes 1, 2, 0x8F.
V5_SUBACK = h("90 0a 00 03 04 1f 00 01 72 01 02 8f")
# UNSUBSCRIBE, 5.0: packet id 4, a user property, "a/b" and "c".
V5_UNSUBSCRIBE = h("a2 12 00 04 07" + U_KV + "00 03 61 2f 62 00 01 63")
# UNSUBACK, 5.0: packet id 4, no properties, codes 0x00 and 0x11 No subscription existed.
V5_UNSUBACK = h("b0 05 00 04 00 00 11")
V5_PINGREQ = h("c0 00")
V5_PINGRESP = h("d0 00")
V5_DISCONNECT = h("e0 00")          # reason 0, no properties: empty (3.14.2.1)
V5_DISCONNECT_REASON = h("e0 01 04")  # reason 0x04 Disconnect with Will, property length left out
# DISCONNECT, reason 0x9C Use another server, with the DISCONNECT properties.
V5_DISCONNECT_PROPS = h(
    "e0 18"                 # rl = 1 + 1 + 22
    "9c 16"                 # reason, property length 22:
    "11 00 00 00 00"        #   Session Expiry Interval 0
    "1f 00 03 62 79 65"     #   Reason String "bye"
    "1c 00 01 73"           #   Server Reference "s"
    + U_KV)
V5_AUTH = h("f0 00")                # AUTH, reason 0 Success, nothing else (3.15.2.1)
# AUTH, reason 0x18 Continue authentication, with the AUTH properties.
V5_AUTH_PROPS = h(
    "f0 15"                 # rl = 1 + 1 + 19
    "18 13"                 # reason, property length 19:
    "15 00 01 6d"           #   Authentication Method "m"
    "16 00 01 01"           #   Authentication Data 01
    "1f 00 01 72"           #   Reason String "r"
    + U_KV)


CONNECT_PROPS = od(
    (P.SESSION_EXPIRY, 120), (P.RECEIVE_MAXIMUM, 20), (P.MAXIMUM_PACKET_SIZE, 1024),
    (P.TOPIC_ALIAS_MAXIMUM, 10), (P.REQUEST_RESPONSE_INFO, 1), (P.REQUEST_PROBLEM_INFO, 0),
    (P.USER_PROPERTY, [("k", "v")]), (P.AUTH_METHOD, "m"), (P.AUTH_DATA, b"\x01\x02"))
WILL_PROPS = od(
    (P.WILL_DELAY, 5), (P.PAYLOAD_FORMAT, 1), (P.MESSAGE_EXPIRY, 60), (P.CONTENT_TYPE, "t"),
    (P.RESPONSE_TOPIC, "r"), (P.CORRELATION_DATA, b"c"), (P.USER_PROPERTY, [("a", "b")]))
CONNACK_PROPS = od(
    (P.SESSION_EXPIRY, 60), (P.RECEIVE_MAXIMUM, 10), (P.MAXIMUM_QOS, 1),
    (P.RETAIN_AVAILABLE, 0), (P.MAXIMUM_PACKET_SIZE, 4096), (P.ASSIGNED_CLIENT_ID, "id"),
    (P.TOPIC_ALIAS_MAXIMUM, 5), (P.REASON_STRING, "ok"), (P.USER_PROPERTY, [("k", "v")]),
    (P.WILDCARD_SUB_AVAILABLE, 1), (P.SUB_ID_AVAILABLE, 1), (P.SHARED_SUB_AVAILABLE, 0),
    (P.SERVER_KEEPALIVE, 30), (P.RESPONSE_INFO, "r"), (P.SERVER_REFERENCE, "s"),
    (P.AUTH_METHOD, "m"), (P.AUTH_DATA, b"d"))
PUBLISH_PROPS = od(
    (P.PAYLOAD_FORMAT, 1), (P.MESSAGE_EXPIRY, 60), (P.CONTENT_TYPE, "text"),
    (P.RESPONSE_TOPIC, "r"), (P.CORRELATION_DATA, b"\xab\xcd"),
    (P.USER_PROPERTY, [("a", "1"), ("a", "2")]), (P.SUBSCRIPTION_ID, [1, 128]))
