# Topic names, filters and matching: UTF-8 rules (MQTT 5.0 1.5.4, 3.1.1
# 1.5.3), topic name and filter validity and the matching table from the
# specification's section 4.7 examples, plus '$' topics, empty levels and
# offsets into larger buffers (the broker matches in place).
import unittest

from umqtt_full import topic as T
from umqtt_full.errors import MQTTException

MALFORMED = 0x81
FILTER_INVALID = 0x8F
TOPIC_INVALID = 0x90


def h(s):
    return bytes.fromhex("".join(s.split()))


def code(fn, data):
    # The MQTTException code fn raises on data placed inside a larger
    # buffer (junk either side), or None when it accepts it.
    buf = bytearray(b"\xff\x00") + data + b"\x00\xff"
    try:
        fn(buf, 2, len(data))
    except MQTTException as e:
        return e.code
    return None


# Well-formed UTF-8 at every length boundary, as hex.
GOOD_UTF8 = (
    "61",                   # U+0061
    "7f",                   # U+007F, last 1-byte
    "c2 80",                # U+0080, first 2-byte
    "c3 a9",                # U+00E9
    "df bf",                # U+07FF, last 2-byte
    "e0 a0 80",             # U+0800, first 3-byte
    "e2 82 ac",             # U+20AC
    "ed 9f bf",             # U+D7FF, just below the surrogates
    "ee 80 80",             # U+E000, just above them
    "ef bb bf",             # U+FEFF (kept, not stripped [MQTT-1.5.4-3])
    "ef bf bf",             # U+FFFF
    "f0 90 80 80",          # U+10000, first 4-byte
    "f0 9f 98 80",          # U+1F600
    "f4 8f bf bf",          # U+10FFFF, the last code point
    "01 1f",                # control characters are allowed (SHOULD NOT, not MUST NOT)
)

# Ill-formed UTF-8 and U+0000: all 0x81 [MQTT-1.5.4-1] [MQTT-1.5.4-2].
BAD_UTF8 = (
    "00",                   # U+0000
    "61 00 62",             # U+0000 inside
    "c0 80",                # overlong U+0000
    "c0 af",                # overlong '/'
    "c1 bf",                # overlong U+007F
    "e0 80 af",             # overlong 3-byte '/'
    "e0 9f bf",             # overlong U+07FF
    "f0 80 80 af",          # overlong 4-byte '/'
    "f0 8f bf bf",          # overlong U+FFFF
    "ed a0 80",             # U+D800, high surrogate
    "ed bf bf",             # U+DFFF, low surrogate
    "ed a0 80 ed b0 80",    # surrogate pair written as CESU-8
    "f4 90 80 80",          # U+110000, over U+10FFFF
    "f5 80 80 80",          # lead byte over F4
    "f8 88 80 80 80",       # 5-byte form
    "fe", "ff",             # never in UTF-8
    "80",                   # lone continuation byte
    "bf 61",
    "c3",                   # truncated 2-byte
    "e2 82",                # truncated 3-byte
    "f0 9f 98",             # truncated 4-byte
    "c3 28",                # bad continuation
    "e2 28 a1", "e2 82 28",
    "f0 28 8c bc", "f0 90 28 bc", "f0 9f 98 28",
    "61 c3",                # truncated at the end after good text
)


class TestUTF8(unittest.TestCase):
    def test_good(self):
        for hx in GOOD_UTF8:
            self.assertEqual(code(T.check_utf8, h(hx)), None, hx)
        self.assertEqual(code(T.check_utf8, b""), None)
        self.assertEqual(code(T.check_utf8, "a/\u00e9/\u20ac/\U0001f600".encode()), None)

    def test_bad(self):
        for hx in BAD_UTF8:
            self.assertEqual(code(T.check_utf8, h(hx)), MALFORMED, hx)
            # Also after a valid prefix, and in a topic name.
            self.assertEqual(code(T.check_utf8, b"ok/" + h(hx)), MALFORMED, hx)
            self.assertEqual(code(T.check_topic, b"a/" + h(hx)), MALFORMED, hx)
            self.assertEqual(code(T.check_filter, b"a/" + h(hx)), MALFORMED, hx)

    def test_region_only(self):
        # A sequence cut by the region's end is truncated even when the
        # buffer holds the rest; bytes outside the region are not looked at.
        buf = h("e2 82 ac")
        with self.assertRaises(MQTTException) as cm:
            T.check_utf8(buf, 0, 2)
        self.assertEqual(cm.exception.code, MALFORMED)
        T.check_utf8(h("00 61 62 00"), 1, 2)
        T.check_utf8(h("ff 61 ff"), 1, 1)


class TestTopicNames(unittest.TestCase):
    def test_valid(self):
        # 4.7.3: any UTF-8 but wildcards; '/' alone, leading, trailing and
        # repeated separators, spaces, '$' names.
        for t in (b"a", b"/", b"//", b"/finance", b"finance/", b"a//b", b"Accounts payable",
                  b"$SYS/broker/load", b"sport/tennis/player1", "\u00e9/\u20ac".encode(),
                  b"a" * 300):
            self.assertEqual(code(T.check_topic, t), None, t)

    def test_invalid(self):
        self.assertEqual(code(T.check_topic, b""), TOPIC_INVALID)  # [MQTT-4.7.3-1]
        for t in (b"+", b"#", b"a/+", b"a/#", b"+/a", b"a+", b"a#b", b"sport/tennis/#"):
            self.assertEqual(code(T.check_topic, t), TOPIC_INVALID, t)  # [MQTT-3.3.2-2]
        self.assertEqual(code(T.check_topic, b"a\x00b"), MALFORMED)


class TestFilters(unittest.TestCase):
    def test_valid(self):
        # 4.7.1.2 and 4.7.1.3 valid examples, and more.
        for f in (b"#", b"sport/tennis/#", b"+", b"+/tennis/#", b"sport/+/player1", b"+/+", b"/+",
                  b"sport/#", b"a/b", b"/", b"a//b", b"a/+/+/#", b"$SYS/#", b"$SYS/monitor/+",
                  b"+/#", b"/#", b"$share/g/a/+", b"a/", b"\xc3\xa9/+"):
            self.assertEqual(code(T.check_filter, f), None, f)

    def test_invalid(self):
        # "sport/tennis#" and "sport/tennis/#/ranking" (4.7.1.2), "sport+"
        # (4.7.1.3), empty (4.7.3), and the like.
        for f in (b"", b"sport/tennis#", b"sport/tennis/#/ranking", b"sport+", b"a/#/b", b"a#",
                  b"a+", b"+a", b"#/a", b"#/", b"##", b"++", b"a/b+", b"a/+b/c", b"+#", b"#+",
                  b"a/#/", b"/a#"):
            self.assertEqual(code(T.check_filter, f), FILTER_INVALID, f)

    def test_is_wild(self):
        self.assertTrue(T.is_wild(b"a/+", 0, 3))
        self.assertTrue(T.is_wild(b"#", 0, 1))
        self.assertFalse(T.is_wild(b"a/b", 0, 3))
        self.assertFalse(T.is_wild(b"", 0, 0))
        self.assertFalse(T.is_wild(b"+a/b#", 1, 3))  # only the region counts


# (filter, topic, matches?) -- 4.7.1.2, 4.7.1.3, 4.7.2 and 4.7.3 examples
# first, then edge cases.
MATCH_TABLE = (
    # 4.7.1.2 multi-level wildcard
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player2", False),
    ("sport/tennis/player1/#", "sport/tennis", False),
    # 4.7.1.3 single-level wildcard
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("sport/+/player1", "sport/tennis/player1", True),
    ("sport/+/player1", "sport/tennis/player2", False),
    ("+/tennis/#", "sport/tennis/player1", True),
    ("+/tennis/#", "sport/tennis", True),
    ("+/tennis/#", "sport/golf", False),
    # 4.7.2 topics beginning with $
    ("#", "$SYS/monitor/Clients", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("#", "$SYS", False),
    ("+", "$SYS", False),
    ("+/#", "$SYS/x", False),
    ("$SYS/#", "$SYS", True),
    ("$SYS", "$SYS", True),
    ("a/+", "a/$b", True),          # only a leading '$' is special
    ("#", "a/$SYS", True),
    # 4.7.3 topic semantics: case-sensitive, spaces, leading '/'
    ("ACCOUNTS", "Accounts", False),
    ("Accounts", "Accounts", True),
    ("Accounts payable", "Accounts payable", True),
    ("/finance", "finance", False),
    ("finance", "/finance", False),
    ("/", "/", True),
    # empty levels
    ("a//b", "a//b", True),
    ("a/+/b", "a//b", True),
    ("a//b", "a/b", False),
    ("a/b", "a//b", False),
    ("a//b", "a/x/b", False),
    ("+/a", "/a", True),
    ("/#", "/a", True),
    ("#", "/a", True),
    ("#", "/", True),
    ("a/+", "a/", True),
    ("a/#", "a/", True),
    ("a/", "a/", True),
    ("+/", "a/", True),
    ("+/+", "a/", True),
    ("+", "a/", False),
    ("a", "a/", False),
    ("a/", "a", False),
    ("a/", "a/b", False),
    ("+/+", "/", True),
    ("+", "/", False),
    ("//", "//", True),
    ("+/+/+", "//", True),
    # parent match and plain levels
    ("a/#", "a", True),
    ("a/b/#", "a", False),
    ("+/#", "a", True),
    ("a/#", "ab", False),
    ("a/#", "b/a", False),
    ("a/b", "a/b", True),
    ("a/b", "a/bc", False),
    ("a/bc", "a/b", False),
    ("a/b", "a/b/c", False),
    ("a/b/c", "a/b", False),
    ("ab", "a", False),
    ("a", "ab", False),
    ("+", "a", True),
    ("+/+", "a", False),
    ("+/b", "a/b", True),
    ("+/b", "a/c", False),
    ("a/+/c", "a/b/c", True),
    ("a/+/c", "a/b/d", False),
    ("a/+/c", "a/b/x/c", False),
    ("a/+/#", "a/b", True),
    ("a/+/#", "a", False),
    ("\u00e9/+", "\u00e9/x", True),
)


class TestMatch(unittest.TestCase):
    def test_table(self):
        for f, t, want in MATCH_TABLE:
            self.assertEqual(T.matches(f, t), want, "%s vs %s" % (f, t))
            self.assertEqual(T.matches(f.encode(), t.encode()), want)

    def test_in_place(self):
        # match() over regions of larger buffers: bytes around the region
        # (including ones that would change the answer) are ignored.
        for f, t, want in MATCH_TABLE:
            fb = b"a/" + f.encode() + b"/x"
            tb = b"#/" + t.encode() + b"/y"
            got = T.match(fb, 2, len(fb) - 4, tb, 2, len(tb) - 4)
            self.assertEqual(got, want, "%s vs %s" % (f, t))
            got = T.match(memoryview(fb), 2, len(fb) - 4, bytearray(tb), 2, len(tb) - 4)
            self.assertEqual(got, want)
        # A topic that continues past its region's end.
        self.assertTrue(T.match(b"a/b", 0, 3, b"a/bc", 0, 3))
        self.assertTrue(T.match(b"a/+", 0, 3, b"a/b", 0, 2))
        self.assertFalse(T.match(b"a/b", 0, 3, b"a/b", 0, 2))


if __name__ == "__main__":
    unittest.main()
