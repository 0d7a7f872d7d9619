# Remaining length (variable byte integer) at every size boundary: the spec's
# table (MQTT 5.0 1.5.5, 3.1.1 2.2.3) for put_varint/get_varint/varint_size,
# remaining_length/packet_size on fixed headers, real PUBLISH packets at
# 127/128 and 16383/16384, and refusal of 5-byte, over-maximum and
# non-minimal encodings. A file of its own, importing only the codec, so the
# 16K packets fit MicroPython's 128K heap next to the compiled code.
import gc
import unittest

# The one 16K buffer, allocated before the codec is compiled while the heap
# still has 16K in one piece.
gc.collect()
_BIG = bytearray(16388)

from umqtt_full import codec, wire  # noqa: E402
from umqtt_full.errors import MQTTException  # noqa: E402

MALFORMED = 0x81
TOO_LARGE = 0x95
SENTINEL = 0xEE


def h(s):
    return bytes.fromhex("".join(s.split()))


def filled(n):
    return bytearray(bytes([SENTINEL]) * n)


def rejects(tc, data, code, framed=True):
    # Decoding data fails with code. framed=False: the header itself is bad.
    if framed:
        tc.assertEqual(codec.packet_size(codec.remaining_length(data, 0, len(data))), len(data))
    with tc.assertRaises(MQTTException) as cm:
        codec.decode(codec.Packet(), bytearray(data), 0, len(data))
    tc.assertEqual(cm.exception.code, code)


VARINTS = (
    (0, "00"), (127, "7f"),
    (128, "80 01"), (16383, "ff 7f"),
    (16384, "80 80 01"), (2097151, "ff ff 7f"),
    (2097152, "80 80 80 01"), (268435455, "ff ff ff 7f"),
)


class FakeLen:
    # A payload that only has a length: lets the encoder size a packet too big
    # to allocate. It must be refused before anything touches it.
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


class TestRemainingLength(unittest.TestCase):
    def test_varint_table(self):
        for n, hx in VARINTS:
            want = h(hx)
            self.assertEqual(wire.varint_size(n), len(want))
            buf = filled(6)
            self.assertEqual(wire.put_varint(buf, 1, n), 1 + len(want))
            self.assertEqual(bytes(buf[1:1 + len(want)]), want)
            self.assertEqual(buf[1 + len(want)], SENTINEL)
            self.assertEqual(wire.get_varint(buf, 1, 1 + len(want)), n)
            # As a PUBLISH fixed header: remaining_length and packet_size.
            hdr = b"\x30" + want
            self.assertEqual(codec.remaining_length(hdr, 0, len(hdr)), n)
            self.assertEqual(codec.packet_size(n), 1 + len(want) + n)

    def test_incomplete_header(self):
        self.assertEqual(codec.remaining_length(b"", 0, 0), -1)
        self.assertEqual(codec.remaining_length(b"\x30", 0, 1), -1)
        self.assertEqual(codec.remaining_length(b"\x30\x80", 0, 2), -1)
        self.assertEqual(codec.remaining_length(b"\x30\xff\xff\xff", 0, 4), -1)
        # end bounds the read, not the buffer's size.
        self.assertEqual(codec.remaining_length(b"\x30\x80\x01", 0, 2), -1)
        self.assertEqual(wire.get_varint(b"\x80\x80", 0, 2), -1)

    def test_too_large_refused(self):
        with self.assertRaises(MQTTException) as cm:
            wire.varint_size(268435456)
        self.assertEqual(cm.exception.code, MALFORMED)

    def test_five_bytes_refused(self):
        for data in (h("30 ff ff ff ff 7f"), h("30 80 80 80 80 01"), h("30 ff ff ff ff")):
            with self.assertRaises(MQTTException) as cm:
                codec.remaining_length(data, 0, len(data))
            self.assertEqual(cm.exception.code, MALFORMED)
            rejects(self, data, MALFORMED, False)

    def test_non_minimal_refused(self):
        # [MQTT-1.5.5-1] the minimum number of bytes must be used.
        for hx in ("80 00", "ff 00", "80 80 00", "ff ff 80 00", "80 80 80 00"):
            data = h(hx)
            with self.assertRaises(MQTTException) as cm:
                wire.get_varint(data, 0, len(data))
            self.assertEqual(cm.exception.code, MALFORMED)
            with self.assertRaises(MQTTException) as cm:
                codec.remaining_length(b"\xc0" + data, 0, 1 + len(data))
            self.assertEqual(cm.exception.code, MALFORMED)
        rejects(self, h("c0 80 00"), MALFORMED, False)  # PINGREQ with a 2-byte zero length

    def test_publish_boundaries(self):
        # PUBLISH with remaining length 127/128 and 16383/16384: topic "t"
        # (3 bytes) plus payload, QoS 0, 3.1.1. The payload is a view of the
        # packet buffer's own payload region (copied onto itself), so a 16K
        # packet needs one 16K buffer: the 128K MicroPython heap has no room
        # for two next to the codec compiled from source.
        big = _BIG
        for rl, hdr in ((127, "30 7f"), (128, "30 80 01"), (16383, "30 ff 7f"),
                        (16384, "30 80 80 01")):
            want_head = h(hdr + "00 01 74")
            size = len(want_head) + rl - 3
            buf = memoryview(big)[:size]
            payload = memoryview(big)[len(want_head):size]
            n = codec.encode_publish(buf, b"t", payload)
            self.assertEqual(n, size)
            self.assertEqual(bytes(big[:len(want_head)]), want_head)
            self.assertEqual(codec.remaining_length(big, 0, n), rl)
            pkt = codec.Packet()
            codec.decode(pkt, big, 0, n)
            self.assertEqual(pkt.payload_len, rl - 3)
            self.assertEqual(pkt.payload_off, len(want_head))
            # One byte less room: refused before writing.
            big[0] = SENTINEL
            with self.assertRaises(MQTTException) as cm:
                codec.encode_publish(buf[:size - 1], b"t", payload)
            self.assertEqual(cm.exception.code, TOO_LARGE)
            self.assertEqual(big[0], SENTINEL)
        # Remaining length 0.
        self.assertEqual(codec.encode_ping(big), 2)
        self.assertEqual(codec.remaining_length(big, 0, 2), 0)

    def test_huge_publish_refused_untouched(self):
        # Sizes that cannot be allocated here: 2097152 and the maximum
        # 268435455 remaining length do not fit a small buffer; 268435456
        # cannot be expressed at all. Each raises 0x95 before writing.
        for rl in (2097151, 2097152, 268435455, 268435456):
            buf = filled(64)
            with self.assertRaises(MQTTException) as cm:
                codec.encode_publish(buf, b"t", FakeLen(rl - 3))
            self.assertEqual(cm.exception.code, TOO_LARGE)
            self.assertEqual(bytes(buf), bytes([SENTINEL]) * 64)


if __name__ == "__main__":
    unittest.main()
