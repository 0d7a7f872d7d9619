# The broker's preallocated tables and its config parsing, without sockets:
# subscription rows (add/replace/remove, shared groups, matching in place),
# the reference-counted message pool, mosquitto-style ACL files with %c/%u.
import unittest

from umqtt_full.broker_store import Pool, Subs, copy, same
from umqtt_full import broker_config as C


class TestSubs(unittest.TestCase):
    def test_add_replace_remove_full(self):
        t = Subs(3, 32)
        self.assertEqual(t.add(0, b"a/+", 0, 1, 0), (0, False))
        self.assertEqual(t.add(0, b"a/+", 0, 2, 5), (0, True))   # replaced in place
        self.assertEqual(t.opts[0], 2)
        self.assertEqual(t.subid[0], 5)
        self.assertEqual(t.add(1, b"a/+", 0, 0, 0), (1, False))  # other session, own row
        self.assertEqual(t.add(1, b"#", 0, 0, 0), (2, False))
        self.assertEqual(t.add(2, b"x", 0, 0, 0), (-1, False))   # full
        self.assertTrue(t.remove(1, b"a/+"))
        self.assertFalse(t.remove(1, b"a/+"))
        self.assertEqual(t.add(2, b"x", 0, 0, 0), (1, False))    # the freed row
        t.drop(1)
        self.assertEqual(t.count, 2)
        self.assertEqual(t.find(1, b"#"), -1)

    def test_match_in_place_and_shared(self):
        t = Subs(4, 32)
        t.add(0, b"$share/g/s/#", 9, 0, 0)
        t.add(1, b"$share/g/s/#", 9, 1, 0)
        t.add(2, b"$share/h/s/#", 9, 0, 0)
        rx = bytearray(b"xxxxs/topicyy")
        self.assertTrue(t.match(0, rx, 4, 7))
        self.assertFalse(t.match(0, bytearray(b"t/x"), 0, 3))
        self.assertTrue(t.same_group(0, 1))
        self.assertFalse(t.same_group(0, 2))
        self.assertFalse(t.match(2, bytearray(b"$SYS/x"), 0, 6))


class TestPool(unittest.TestCase):
    def test_refcount_and_full(self):
        p = Pool(2, 16)
        a = p.alloc(3, 0, 4)
        b = p.alloc(3, 0, 14)
        self.assertEqual(b, -1)          # does not fit a slot
        b = p.alloc(1, 0, 1)
        self.assertEqual(p.alloc(1, 0, 1), -1)
        p.hold(a)
        p.release(a)
        self.assertEqual(p.used, 2)
        p.release(a)
        self.assertEqual(p.used, 1)
        self.assertEqual(p.alloc(1, 0, 1), a)
        self.assertNotEqual(a, b)

    def test_copy_same(self):
        d = bytearray(8)
        copy(d, 2, b"abcdef", 1, 3)
        self.assertEqual(bytes(d), b"\x00\x00bcd\x00\x00\x00")
        self.assertTrue(same(d, 2, b"xbcd", 1, 3))
        self.assertFalse(same(d, 2, b"xbce", 1, 3))


class TestConfig(unittest.TestCase):
    def test_defaults_and_unknown_key(self):
        c = C.load({"max_clients": 2})
        self.assertEqual(c["max_clients"], 2)
        self.assertEqual(c["msg_size"], c["max_packet"])
        self.assertIsNone(c["acl_rules"])
        with self.assertRaises(ValueError):
            C.load({"max_client": 2})

    def test_acl_file_patterns(self):
        rules = C.parse_acl("# c\ntopic read public/#\nuser alice\ntopic alice/#\n"
                            "topic deny alice/secret\npattern write clients/%c/#\n"
                            "pattern read users/%u/in\n")
        a = C.acl_for(rules, "alice", "dev1")
        self.assertEqual(a, [(C.READ | C.WRITE, b"alice/#"), (C.DENY, b"alice/secret"),
                             (C.WRITE, b"clients/dev1/#"), (C.READ, b"users/alice/in")])
        anon = C.acl_for(rules, None, "dev2")
        self.assertEqual(anon, [(C.READ, b"public/#"), (C.WRITE, b"clients/dev2/#")])
        self.assertIsNone(C.acl_for(None, "x", "y"))
        with self.assertRaises(ValueError):
            C.parse_acl("topic sometimes a/b c\nbogus line\n")


if __name__ == "__main__":
    unittest.main()
