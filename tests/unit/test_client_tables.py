# Session tables: packet id allocation, the in-flight window, resend order,
# and the received-QoS-2 ids that make delivery exactly-once.
import unittest

from umqtt_full.session import Session, WAIT_ACK, WAIT_REC


class SessionTest(unittest.TestCase):
    def test_pids_skip_in_flight_and_wrap(self):
        s = Session(4, 4)
        s._next = 65533
        a = s.new_pid()
        s.add(a, b"t", b"m", 1, False, None)
        b = s.new_pid()
        s.add(b, b"t", b"m", 2, True, None)
        self.assertEqual((a, b), (65534, 65535))
        s._next = 65533  # wrapped round: ids in flight are skipped, 0 never used
        self.assertEqual(s.new_pid(), 1)
        s.reserved = 2
        self.assertEqual(s.new_pid(), 3)

    def test_window_and_states(self):
        s = Session(2, 2)
        self.assertEqual(s.add(1, b"a", b"1", 1, False, None), 0)
        self.assertEqual(s.add(2, b"b", b"2", 2, True, None), 1)
        self.assertEqual(s.add(3, b"c", b"3", 1, False, None), -1)  # full
        self.assertEqual(s.state[0], WAIT_ACK)
        self.assertEqual(s.state[1], WAIT_REC)
        self.assertEqual(s.flags[1], 2 | 4)
        s.free(s.find(1))
        self.assertEqual(s.count, 1)
        self.assertEqual(s.find(1), -1)
        self.assertIsNone(s.topic[0])

    def test_resend_order(self):
        s = Session(4, 4)
        for pid in (9, 4, 7):
            s.add(pid, b"t", b"%d" % pid, 1, False, None)
        s.free(s.find(4))
        s.add(5, b"t", b"5", 1, False, None)  # reuses slot 1, but is newest
        self.assertEqual([s.pid[i] for i in s.pending()], [9, 7, 5])

    def test_qos2_received_ids(self):
        s = Session(2, 3)
        self.assertTrue(s.rx_add(10))
        self.assertTrue(s.rx_add(11))
        self.assertTrue(s.rx_has(10))
        self.assertTrue(s.rx_del(10))
        self.assertFalse(s.rx_has(10))
        self.assertFalse(s.rx_del(10))
        self.assertTrue(s.rx_add(12))
        self.assertTrue(s.rx_add(13))
        # Room for twice the advertised Receive Maximum (3), then full: the
        # caller refuses (0x93).
        self.assertEqual(s.rx_max, 3)
        for pid in (14, 15, 16):
            self.assertTrue(s.rx_add(pid))
        self.assertFalse(s.rx_add(17))
        s.clear_rx()
        self.assertFalse(s.rx_has(11))


if __name__ == "__main__":
    unittest.main()
