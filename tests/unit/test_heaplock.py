# The codec's hot path allocates nothing: under micropython.heap_lock() any
# allocation raises MemoryError. Encode PUBLISH QoS 0/1/2 in 3.1.1 and 5.0
# (with a Topic Alias and properties), the four acks in both versions,
# PINGREQ/PINGRESP; decode each of them (PUBLISH into the reused Packet).
# MicroPython only: on CPython the test is skipped.
import unittest

try:
    import micropython
    micropython.heap_lock  # noqa: B018  (the unix port has it; some builds do not)
except (ImportError, AttributeError):
    micropython = None

from umqtt_full import codec
from umqtt_full import props as P

# Everything the locked sections touch exists before they run.
TOPIC = b"sensors/kitchen/temp"
PAYLOAD = b"21.5"
PROPS = {P.MESSAGE_EXPIRY: 60}  # a one-entry dict: encoding iterates it in place
OUT = bytearray(128)
PKT = codec.Packet()
ACKS = (4, 5, 6, 7)  # PUBACK, PUBREC, PUBREL, PUBCOMP: a constant tuple
RES = [0] * 40  # results written by index (no allocation), checked after unlocking


def h(s):
    return bytes.fromhex("".join(s.split()))


# What each encode must produce (hand-written, as in codec_vectors.py).
EXPECT = (
    h("30 1a 00 14") + TOPIC + PAYLOAD,                  # v4 QoS 0: rl 2+20+4 = 26
    h("32 1c 00 14") + TOPIC + h("00 07") + PAYLOAD,      # v4 QoS 1 pid 7: rl 28
    h("3d 1c 00 14") + TOPIC + h("00 08") + PAYLOAD,      # v4 QoS 2 DUP RETAIN pid 8
    h("30 1b 00 14") + TOPIC + h("00") + PAYLOAD,         # v5 QoS 0, property length 0: rl 27
    h("32 20 00 14") + TOPIC + h("00 07 03 23 00 02") + PAYLOAD,  # v5 QoS 1, alias 2: rl 32
    # v5 QoS 2, empty topic, pid 8, properties (8): Message Expiry 60, Topic Alias 2; rl 17
    h("34 11 00 00 00 08 08 02 00 00 00 3c 23 00 02") + PAYLOAD,
)


# Received packets with every PUBLISH property (codec_vectors.V5_PUBLISH_Q1)
# and an ack with a reason string and a user property: validating their
# properties (props.scan) must not allocate either.
RX_PUBLISH = bytearray(h(
    "32 34 00 01 74 00 05 2d 01 01 02 00 00 00 3c 03 00 04 74 65 78 74 08 00 01 72"
    "09 00 02 ab cd 26 00 01 61 00 01 31 26 00 01 61 00 01 32 0b 01 0b 80 01 23 00 03 78"))
RX_PUBACK = bytearray(h("40 12 00 01 97 0e 1f 00 04 66 75 6c 6c 26 00 01 6b 00 01 76"))


def _locked_work():
    # Runs with the heap locked: encode then decode each packet into OUT/PKT,
    # recording lengths and decoded fields into RES.
    out = OUT
    pkt = PKT
    res = RES
    i = 0
    # PUBLISH, 3.1.1
    n = codec.encode_publish(out, TOPIC, PAYLOAD)
    res[i] = n
    codec.decode(pkt, out, 0, n)
    res[i + 1] = pkt.payload_len
    i += 2
    n = codec.encode_publish(out, TOPIC, PAYLOAD, 1, False, False, 7)
    res[i] = n
    codec.decode(pkt, out, 0, n)
    res[i + 1] = pkt.pid
    i += 2
    n = codec.encode_publish(out, TOPIC, PAYLOAD, qos=2, retain=True, dup=True, pid=8)
    res[i] = n
    codec.decode(pkt, out, 0, n, 4)
    res[i + 1] = pkt.qos
    i += 2
    # PUBLISH, 5.0
    n = codec.encode_publish(out, TOPIC, PAYLOAD, version=5)
    res[i] = n
    codec.decode(pkt, out, 0, n, 5)
    res[i + 1] = pkt.topic_len
    i += 2
    n = codec.encode_publish(out, TOPIC, PAYLOAD, 1, False, False, 7, 5, None, 2)
    res[i] = n
    codec.decode(pkt, out, 0, n, 5)
    res[i + 1] = pkt.alias
    i += 2
    n = codec.encode_publish(out, b"", PAYLOAD, 2, pid=8, version=5, props=PROPS, alias=2)
    res[i] = n
    codec.decode(pkt, out, 0, n, 5)
    res[i + 1] = pkt.expiry
    i += 2
    # The four acks, 3.1.1 and 5.0 (short form and with a reason code).
    for t in ACKS:
        n = codec.encode_ack(out, t, 300)
        codec.decode(pkt, out, 0, n, 4)
        res[i] = n + pkt.pid
        n = codec.encode_ack(out, t, 301, 0, 5)
        codec.decode(pkt, out, 0, n, 5)
        res[i + 1] = n + pkt.pid
        n = codec.encode_ack(out, t, 302, 0x92, 5)
        codec.decode(pkt, out, 0, n, 5)
        res[i + 2] = n + pkt.pid + pkt.reason
        i += 3
    # Pings.
    n = codec.encode_ping(out)
    res[i] = n + codec.decode(pkt, out, 0, n)
    n = codec.encode_ping(out, codec.PINGRESP)
    res[i + 1] = n + codec.decode(pkt, out, 0, n, 5)
    i += 2
    # Framing a packet that is arriving.
    res[i] = codec.remaining_length(out, 0, 1)
    res[i + 1] = codec.packet_size(200)
    i += 2
    # Received packets with properties.
    codec.decode(pkt, RX_PUBLISH, 0, len(RX_PUBLISH), 5)
    res[i] = pkt.alias * 1000 + pkt.expiry * 10 + pkt.pfi
    res[i + 1] = pkt.payload_off
    codec.decode(pkt, RX_PUBACK, 0, len(RX_PUBACK), 5)
    res[i + 2] = pkt.reason
    return i + 3


if micropython is not None:
    class TestHeapLock(unittest.TestCase):
        def test_encode_matches_reference(self):
            # The packets the locked section makes are the right ones.
            for k, args, kw in ((0, (), {}), (1, (1, False, False, 7), {}),
                                (2, (), {"qos": 2, "retain": True, "dup": True, "pid": 8}),
                                (3, (), {"version": 5}),
                                (4, (1, False, False, 7, 5, None, 2), {})):
                n = codec.encode_publish(OUT, TOPIC, PAYLOAD, *args, **kw)
                self.assertEqual(bytes(OUT[:n]), EXPECT[k])
            n = codec.encode_publish(OUT, b"", PAYLOAD, 2, pid=8, version=5, props=PROPS, alias=2)
            self.assertEqual(bytes(OUT[:n]), EXPECT[5])

        def test_no_allocation(self):
            _locked_work()  # once unlocked: any lazy setup happens here
            for k in range(len(RES)):
                RES[k] = -99
            micropython.heap_lock()
            try:
                used = _locked_work()
            finally:
                micropython.heap_unlock()
            self.assertEqual(RES[:12], [len(EXPECT[0]), 4, len(EXPECT[1]), 7, len(EXPECT[2]), 2,
                                        len(EXPECT[3]), 20, len(EXPECT[4]), 2, len(EXPECT[5]), 60])
            want = []
            for _ in range(4):
                want += [4 + 300, 4 + 301, 5 + 302 + 0x92]
            self.assertEqual(RES[12:24], want)
            self.assertEqual(RES[24:used], [2 + codec.PINGREQ, 2 + codec.PINGRESP, -1, 203,
                                            3601, 53, 0x97])

        def test_lock_is_effective(self):
            # The lock really catches an allocation (so the test above can fail).
            micropython.heap_lock()
            try:
                try:
                    bytearray(16)
                    caught = False
                except MemoryError:
                    caught = True
            finally:
                micropython.heap_unlock()
            self.assertTrue(caught)
else:
    class TestHeapLock(unittest.TestCase):
        def test_no_allocation(self):
            self.skipTest("micropython.heap_lock() is MicroPython only")

        def test_same_work_runs_on_cpython(self):
            # The locked section's code path is exercised here too, so a
            # CPython run still checks the values it produces.
            used = _locked_work()
            self.assertEqual(RES[:12], [len(EXPECT[0]), 4, len(EXPECT[1]), 7, len(EXPECT[2]), 2,
                                        len(EXPECT[3]), 20, len(EXPECT[4]), 2, len(EXPECT[5]), 60])
            self.assertEqual(RES[24:used], [2 + codec.PINGREQ, 2 + codec.PINGRESP, -1, 203,
                                            3601, 53, 0x97])


if __name__ == "__main__":
    unittest.main()
