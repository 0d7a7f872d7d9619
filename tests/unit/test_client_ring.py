# The offline ring: FIFO order, wrap-around, and each full-buffer policy.
import unittest

from umqtt_full.ring import Ring, DROP_OLDEST, DROP_NEW, ERROR
from umqtt_full.errors import MQTTException


def take(r):
    out = bytearray(64)
    n = r.get(out)
    return bytes(out[:n])


class RingTest(unittest.TestCase):
    def test_fifo_and_wrap(self):
        r = Ring(20)
        for k in range(10):  # many passes over a 20-byte buffer
            self.assertTrue(r.put(b"abcde%d" % k, 6))
            self.assertTrue(r.put(b"xy%d" % k, 3))
            self.assertEqual(take(r), b"abcde%d" % k)
            self.assertEqual(take(r), b"xy%d" % k)
            self.assertEqual(r.count, 0)
        self.assertEqual(r.get(bytearray(8)), 0)

    def test_drop_oldest(self):
        r = Ring(16, DROP_OLDEST)
        for k in range(4):
            r.put(b"msg%d" % k, 4)  # 6 bytes each: two fit
        self.assertEqual((r.count, r.dropped), (2, 2))
        self.assertEqual(take(r), b"msg2")
        self.assertEqual(take(r), b"msg3")

    def test_drop_new(self):
        r = Ring(16, DROP_NEW)
        results = [r.put(b"msg%d" % k, 4) for k in range(4)]
        self.assertEqual(results, [True, True, False, False])
        self.assertEqual(take(r), b"msg0")
        self.assertEqual(r.dropped, 2)

    def test_error_policy_and_oversize(self):
        r = Ring(16, ERROR)
        r.put(b"msg0", 4)
        r.put(b"msg1", 4)
        with self.assertRaises(MQTTException) as cm:
            r.put(b"msg2", 4)
        self.assertEqual(cm.exception.args[0], 0x97)
        self.assertEqual(r.count, 2)
        r2 = Ring(8, DROP_OLDEST)
        self.assertFalse(r2.put(b"0123456789", 10))  # never fits: dropped, not stored
        self.assertEqual((r2.count, r2.dropped), (0, 1))


if __name__ == "__main__":
    unittest.main()
