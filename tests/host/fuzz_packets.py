# Hypothesis strategies for MQTT 3.1.1 / 5.0 packets, written from the spec
# in CPython (struct and bytes, not our codec): structurally valid packets of
# every type with random fields and properties, and mutations of them (bit
# flips, truncation, bad remaining lengths, bad UTF-8, reserved flags, wrong
# or duplicate properties, topic alias 0 ...). Shared by the broker and client
# fuzz tests. No tests here.
import struct

from hypothesis import strategies as st

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)

# Property id -> (value type, packet types where allowed; 0 = will properties)
_B, _U16, _U32, _VI, _STR, _BIN, _PAIR = range(7)
_ACKS = {PUBACK, PUBREC, PUBREL, PUBCOMP}
_REASON = {CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH}
PROPS = {
    0x01: (_B, {PUBLISH, 0}), 0x02: (_U32, {PUBLISH, 0}), 0x03: (_STR, {PUBLISH, 0}),
    0x08: (_STR, {PUBLISH, 0}), 0x09: (_BIN, {PUBLISH, 0}), 0x0B: (_VI, {PUBLISH, SUBSCRIBE}),
    0x11: (_U32, {CONNECT, CONNACK, DISCONNECT}), 0x12: (_STR, {CONNACK}),
    0x13: (_U16, {CONNACK}), 0x15: (_STR, {CONNECT, CONNACK, AUTH}),
    0x16: (_BIN, {CONNECT, CONNACK, AUTH}), 0x17: (_B, {CONNECT}), 0x18: (_U32, {0}),
    0x19: (_B, {CONNECT}), 0x1A: (_STR, {CONNACK}), 0x1C: (_STR, {CONNACK, DISCONNECT}),
    0x1F: (_STR, _REASON), 0x21: (_U16, {CONNECT, CONNACK}), 0x22: (_U16, {CONNECT, CONNACK}),
    0x23: (_U16, {PUBLISH}), 0x24: (_B, {CONNACK}), 0x25: (_B, {CONNACK}),
    0x26: (_PAIR, _REASON | {CONNECT, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, 0}),
    0x27: (_U32, {CONNECT, CONNACK}), 0x28: (_B, {CONNACK}), 0x29: (_B, {CONNACK}),
    0x2A: (_B, {CONNACK}),
}
# Byte-valued properties whose only legal values are 0 and 1.
_BOOL = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}

BAD_UTF8 = [b"\xc0\x80", b"\xed\xa0\x80", b"\xff", b"a\x00b", b"\xe2\x82", b"\xf8\x88\x80\x80\x80",
            b"\xc3", b"\xef\xbf\xbe"[:2], b"\x80abc"]


# Hand-built packet pieces shared with the broker tests.
from test_broker_helpers import varint, s16, pkt  # noqa: E402


def enc_prop(pid, value):
    t = PROPS[pid][0] if pid in PROPS else _B
    if t == _B:
        v = bytes([value & 0xFF])
    elif t == _U16:
        v = struct.pack(">H", value & 0xFFFF)
    elif t == _U32:
        v = struct.pack(">I", value & 0xFFFFFFFF)
    elif t == _VI:
        v = varint(value)
    elif t in (_STR, _BIN):
        v = s16(value)
    else:
        v = s16(value[0]) + s16(value[1])
    return bytes([pid]) + v


def props_block(items):
    b = b"".join(enc_prop(k, v) for k, v in items)
    return varint(len(b)) + b


# ---- field strategies ----------------------------------------------------------

_chars = st.characters(min_codepoint=0x20, max_codepoint=0x7FF,
                       blacklist_characters="+#/", blacklist_categories=("Cs", "Cc"))
word = st.one_of(st.sampled_from(["a", "b", "fz", "x1", "sensor", "t"]),
                 st.text(_chars, min_size=1, max_size=6))
ustr = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FFF,
                             blacklist_categories=("Cs", "Cc")), max_size=12)
small_bin = st.binary(max_size=12)


@st.composite
def topic(draw):
    # Valid topic names under "fz/" so the tests' own traffic stays apart.
    levels = draw(st.lists(st.one_of(word, st.just("")), min_size=1, max_size=3))
    return ("fz/" + "/".join(levels)).encode()


@st.composite
def topic_filter(draw):
    levels = draw(st.lists(st.one_of(word, st.just("+"), st.just("")), min_size=0, max_size=3))
    f = "/".join(["fz"] + levels)
    if draw(st.booleans()):
        f += "/#"
    if draw(st.integers(0, 9)) == 0:
        f = draw(st.sampled_from(["#", "+", "+/#", "fz/#"]))
    return f.encode()


def prop_value(pid, where):
    t = PROPS[pid][0]
    if pid in _BOOL:
        return st.integers(0, 1)
    if pid == 0x0B:
        return st.integers(1, 268435455)
    if pid == 0x23:
        return st.integers(1, 4)       # the broker's topic_alias_max (default 4)
    if pid == 0x21:
        return st.integers(1, 65535)
    if pid == 0x08:
        return topic().map(bytes.decode)  # a Response Topic is a topic name
    if pid == 0x27:
        return st.integers(600, 0xFFFFFFFF)
    if pid == 0x24:
        return st.integers(0, 1)
    if pid == 0x11 and where == DISCONNECT:
        return st.just(0)  # non-zero after a zero CONNECT expiry is a protocol error
    if t == _B:
        return st.integers(0, 1)
    if t == _U16:
        return st.integers(0, 65535)
    if t == _U32:
        return st.integers(0, 0xFFFFFFFF)
    if t == _VI:
        return st.integers(1, 268435455)
    if t == _STR:
        return ustr
    if t == _BIN:
        return small_bin
    return st.tuples(ustr, ustr)


# Properties a well-behaved client may send (the broker's answers to the
# others are refusals: AUTH method -> CONNACK 0x8C, a client's Subscription
# Identifier on PUBLISH -> protocol error).
_CLIENT_OK = {
    CONNECT: [0x11, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27],
    0: [0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26],
    PUBLISH: [0x01, 0x02, 0x03, 0x08, 0x09, 0x23, 0x26],
    PUBACK: [0x1F, 0x26], PUBREC: [0x1F, 0x26], PUBREL: [0x1F, 0x26], PUBCOMP: [0x1F, 0x26],
    SUBSCRIBE: [0x0B, 0x26], UNSUBSCRIBE: [0x26], DISCONNECT: [0x11, 0x1F, 0x26],
    AUTH: [0x15, 0x16, 0x1F, 0x26],
    CONNACK: [0x11, 0x12, 0x13, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A],
    SUBACK: [0x1F, 0x26], UNSUBACK: [0x1F, 0x26],
}


@st.composite
def valid_props(draw, where, ok=None):
    ids = draw(st.lists(st.sampled_from(ok or _CLIENT_OK[where]), max_size=3, unique=True))
    items = []
    for pid in sorted(ids):
        if pid == 0x26:
            for _ in range(draw(st.integers(1, 2))):
                items.append((pid, draw(prop_value(pid, where))))
        else:
            items.append((pid, draw(prop_value(pid, where))))
    return items


# ---- valid packets -------------------------------------------------------------
# Each strategy returns a dict: the bytes and what a peer must answer.

@st.composite
def connect_pkt(draw, v, cid=None):
    clean = draw(st.booleans())
    flags = 0x02 if clean else 0
    if cid is None:
        cid = draw(st.sampled_from([b"fz", b"fz2", b""]))
    if not clean and not cid:
        cid = b"fz"
    pay = s16(cid)
    if draw(st.booleans()):
        q = draw(st.integers(0, 2))
        flags |= 0x04 | (q << 3) | (0x20 if draw(st.booleans()) else 0)
        if v == 5:
            pay += props_block(draw(valid_props(0)))
        pay += s16(draw(topic())) + s16(draw(small_bin))
    var = s16(b"MQTT") + bytes([v, flags]) + struct.pack(">H", draw(st.sampled_from([0, 30, 60, 600])))
    if v == 5:
        var += props_block(draw(valid_props(CONNECT)))
    return pkt(0x10, var + pay)


@st.composite
def publish_pkt(draw, v, alias=True):
    q = draw(st.integers(0, 2))
    dup = q > 0 and draw(st.booleans())
    retain = draw(st.booleans())
    pid = draw(st.integers(1, 65535)) if q else 0
    body = s16(draw(topic()))
    if q:
        body += struct.pack(">H", pid)
    if v == 5:
        ok = _CLIENT_OK[PUBLISH] if alias else [p for p in _CLIENT_OK[PUBLISH] if p != 0x23]
        items = draw(valid_props(PUBLISH, ok))
        # Payload Format Indicator 1 promises UTF-8: keep the payload text.
        body += props_block(items)
        if any(k == 1 and val == 1 for k, val in items):
            body += draw(ustr).encode()
        else:
            body += draw(st.binary(max_size=40))
    else:
        body += draw(st.binary(max_size=40))
    first = 0x30 | (8 if dup else 0) | (q << 1) | (1 if retain else 0)
    return pkt(first, body), (PUBACK if q == 1 else PUBREC if q == 2 else None), pid


@st.composite
def ack_pkt(draw, v, t):
    pid = draw(st.integers(1, 65535))
    body = struct.pack(">H", pid)
    if v == 5 and draw(st.booleans()):
        body += bytes([draw(st.sampled_from([0, 0x10, 0x80, 0x92]) if t in (PUBACK, PUBREC)
                            else st.sampled_from([0, 0x92]))])
        if draw(st.booleans()):
            body += props_block(draw(valid_props(t)))
    return pkt((t << 4) | (2 if t == PUBREL else 0), body), pid


@st.composite
def subscribe_pkt(draw, v):
    pid = draw(st.integers(1, 65535))
    n = draw(st.integers(1, 3))
    body = struct.pack(">H", pid)
    if v == 5:
        body += props_block(draw(valid_props(SUBSCRIBE)))
    for _ in range(n):
        o = draw(st.integers(0, 2))
        if v == 5:
            o |= draw(st.sampled_from([0, 4])) | draw(st.sampled_from([0, 8]))
            o |= draw(st.integers(0, 2)) << 4
        body += s16(draw(topic_filter())) + bytes([o])
    return pkt(0x82, body), pid, n


@st.composite
def unsubscribe_pkt(draw, v):
    pid = draw(st.integers(1, 65535))
    n = draw(st.integers(1, 3))
    body = struct.pack(">H", pid)
    if v == 5:
        body += props_block(draw(valid_props(UNSUBSCRIBE)))
    for _ in range(n):
        body += s16(draw(topic_filter()))
    return pkt(0xA2, body), pid, n


@st.composite
def disconnect_pkt(draw, v):
    if v == 4 or draw(st.booleans()):
        return pkt(0xE0, b"")
    body = bytes([draw(st.sampled_from([0, 4, 0x80]))])
    if draw(st.booleans()):
        body += props_block(draw(valid_props(DISCONNECT)))
    return pkt(0xE0, body)


@st.composite
def server_pkt(draw, v):
    # Packets only a server sends: a client sending them is a protocol error.
    t = draw(st.sampled_from([CONNACK, SUBACK, UNSUBACK, PINGRESP]))
    if t == CONNACK:
        body = b"\x00\x00" + (props_block(draw(valid_props(CONNACK))) if v == 5 else b"")
    elif t == PINGRESP:
        body = b""
    else:
        body = struct.pack(">H", draw(st.integers(1, 65535)))
        if v == 5:
            body += b"\x00"
        if t == SUBACK or v == 5:
            body += bytes(draw(st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=3)))
    return pkt(t << 4, body)


@st.composite
def client_packet(draw, v):
    """One structurally valid client->server packet after CONNECT, with what
    the broker must do: ("ack", type, pid[, n]) an answer, ("none",) nothing in
    particular, ("close",) the connection ends (v5: DISCONNECT >= 0x80 first,
    except after our own DISCONNECT)."""
    kind = draw(st.sampled_from(["publish", "publish", "publish", "ack", "pubrel", "subscribe",
                                 "unsubscribe", "ping", "disconnect", "server", "connect", "auth"]))
    if kind == "publish":
        b, t, pid = draw(publish_pkt(v))
        return b, (("ack", t, pid) if t else ("none",))
    if kind == "ack":
        b, pid = draw(ack_pkt(v, draw(st.sampled_from([PUBACK, PUBREC, PUBCOMP]))))
        return b, ("none",)
    if kind == "pubrel":
        b, pid = draw(ack_pkt(v, PUBREL))
        return b, ("ack", PUBCOMP, pid)
    if kind == "subscribe":
        b, pid, n = draw(subscribe_pkt(v))
        return b, ("ack", SUBACK, pid, n)
    if kind == "unsubscribe":
        b, pid, n = draw(unsubscribe_pkt(v))
        return b, ("ack", UNSUBACK, pid, n)
    if kind == "ping":
        return pkt(0xC0, b""), ("ack", PINGRESP, None)
    if kind == "disconnect":
        return draw(disconnect_pkt(v)), ("disconnect",)
    if kind == "connect":
        return draw(connect_pkt(v)), ("close",)
    if kind == "auth":
        # Enhanced authentication is not implemented: AUTH after CONNECT is a
        # protocol error (v5); type 15 is reserved in 3.1.1 (malformed).
        body = b"" if v == 4 else bytes([0x19]) + props_block([(0x15, "TOY")])
        return pkt(0xF0, body), ("close",)
    return draw(server_pkt(v)), ("close",)


# ---- mutations -------------------------------------------------------------------

def _fixed_header_len(b):
    i = 1
    while i < len(b) and i < 5 and b[i] & 0x80:
        i += 1
    return i + 1


@st.composite
def mutate(draw, b):
    """A malformed or suspicious variant of packet bytes b."""
    hl = _fixed_header_len(b)
    body = b[hl:]
    how = draw(st.sampled_from(["flip", "flip", "truncate", "truncate_framed", "rl", "flags",
                                "extend", "splice"]))
    if how == "flip":
        out = bytearray(b)
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(out) - 1))
            out[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    if how == "truncate":  # announces more than it sends (the peer sees EOF)
        return b[:draw(st.integers(1, max(1, len(b) - 1)))]
    if how == "truncate_framed":  # a consistent frame around a cut body
        n = draw(st.integers(0, max(0, len(body) - 1)))
        return pkt(b[0], body[:n])
    if how == "rl":
        rl = draw(st.sampled_from(["five", "nonmin", "delta", "huge"]))
        if rl == "five":
            return bytes([b[0]]) + b"\xff\xff\xff\xff\x7f" + body
        if rl == "nonmin":
            return bytes([b[0]]) + bytes([(len(body) & 0x7F) | 0x80, 0x00]) + body
        if rl == "huge":
            return bytes([b[0]]) + varint(draw(st.integers(513, 268435455))) + body
        d = draw(st.integers(-4, 4).filter(lambda x: x != 0))
        return bytes([b[0]]) + varint(max(0, len(body) + d)) + body
    if how == "flags":
        return bytes([(b[0] & 0xF0) | draw(st.integers(0, 15))]) + b[1:]
    if how == "extend":
        return pkt(b[0], body + draw(st.binary(min_size=1, max_size=8)))
    # splice random bytes into the body
    i = draw(st.integers(0, len(body)))
    return pkt(b[0], body[:i] + draw(st.binary(min_size=1, max_size=6)) + body[i:])


@st.composite
def bad_props(draw, where):
    """A properties block with one thing wrong for packet type `where`."""
    good = draw(valid_props(where)) if where in _CLIENT_OK else []
    how = draw(st.sampled_from(["wrong_id", "unknown_id", "dup", "alias0", "sid0", "bool2",
                                "bad_utf8", "overrun", "bad_varint"]))
    raw = b"".join(enc_prop(k, v) for k, v in good)
    if how == "wrong_id":
        wrong = [k for k, (t, w) in PROPS.items() if where not in w]
        k = draw(st.sampled_from(wrong))
        raw += enc_prop(k, draw(prop_value(k, where)))
    elif how == "unknown_id":
        unknown = [0x00, 0x04, 0x05, 0x0A, 0x10, 0x20, 0x2B, 0x7F, 0x80, 0xFF]
        raw += bytes([draw(st.sampled_from(unknown))]) + b"\x00"
    elif how == "dup":
        singles = [k for k in _CLIENT_OK.get(where, []) if k != 0x26]
        if singles:
            k = draw(st.sampled_from(singles))
            e = enc_prop(k, draw(prop_value(k, where)))
            raw += e + e
        else:
            raw += b"\x1f\x00\x00\x1f\x00\x00"
    elif how == "alias0":
        raw += enc_prop(0x23, 0)
    elif how == "sid0":
        raw += enc_prop(0x0B, 0)
    elif how == "bool2":
        k = draw(st.sampled_from(sorted(_BOOL)))
        raw += bytes([k, draw(st.integers(2, 255))])
    elif how == "bad_utf8":
        raw += b"\x1f" + s16(draw(st.sampled_from(BAD_UTF8)))
    elif how == "overrun":
        return varint(len(raw) + draw(st.integers(1, 20))) + raw
    else:
        return b"\xff\xff\xff\xff\x7f" + raw
    return varint(len(raw)) + raw


@st.composite
def structural_bad(draw, v):
    """Packets whose frame is right but a field is wrong: bad UTF-8 topics and
    filters, wildcards in a topic name, QoS 3, packet id 0, empty topic
    without alias, bad properties for the packet type (3.1.1: reserved
    fixed-header flags), empty SUBSCRIBE, bad subscription options, a topic
    alias over the broker's maximum (4), reserved packet types.
    Every one is certainly invalid for version v on its own, whatever valid
    packets came before it: a server must close the connection (v5: with a
    DISCONNECT >= 0x80). Shared-subscription names are in bad_share_subscribe
    (a SUBACK failure code is a valid answer there)."""
    how = draw(st.sampled_from(["topic_utf8", "topic_wild", "qos3", "pid0", "empty_topic",
                                "props", "sub_empty", "sub_opts", "sub_utf8", "unsub_empty",
                                "alias_over", "pid0_sub", "dup_q0", "reserved_type"]))
    props = (lambda where: draw(bad_props(where))) if v == 5 else (lambda where: b"")
    vp = b"\x00" if v == 5 else b""  # an empty 5.0 properties block
    if how == "topic_utf8":
        return pkt(0x30, s16(b"fz/" + draw(st.sampled_from(BAD_UTF8))) + vp + b"x")
    if how == "topic_wild":
        return pkt(0x30, s16(draw(st.sampled_from([b"fz/+", b"fz/#", b"#", b"a/+/b"]))) + vp)
    if how == "qos3":
        return pkt(0x36, s16(b"fz/q") + b"\x00\x01" + (b"\x00" if v == 5 else b""))
    if how == "pid0":
        return pkt(draw(st.sampled_from([0x32, 0x34])), s16(b"fz/p") + b"\x00\x00" + vp)
    if how == "empty_topic":
        return pkt(0x30, s16(b"") + (b"\x00" if v == 5 else b"") + b"x")
    if how == "props":
        where = draw(st.sampled_from([PUBLISH, PUBACK, PUBREL, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT]))
        if v == 4:
            # No properties in 3.1.1: reserved fixed-header flags instead
            # (3.1.1 2.2.2: any other value is malformed, close).
            return draw(st.sampled_from([
                pkt(0x60, b"\x00\x07"), pkt(0x42, b"\x00\x07"), pkt(0x51, b"\x00\x07"),
                pkt(0x78, b"\x00\x07"), pkt(0x80, b"\x00\x07" + s16(b"fz/s") + b"\x00"),
                pkt(0xA0, b"\x00\x07" + s16(b"fz/s")), pkt(0xC4, b""), pkt(0xE1, b"")]))
        p = props(where)
        if where == PUBLISH:
            return pkt(0x30, s16(b"fz/pp") + p + b"x")
        if where in (PUBACK, PUBREL):
            return pkt((where << 4) | (2 if where == PUBREL else 0), b"\x00\x07\x00" + p)
        if where == SUBSCRIBE:
            return pkt(0x82, b"\x00\x07" + p + s16(b"fz/s") + b"\x01")
        if where == UNSUBSCRIBE:
            return pkt(0xA2, b"\x00\x07" + p + s16(b"fz/s"))
        return pkt(0xE0, b"\x00" + p)
    if how == "sub_empty":
        return pkt(0x82, b"\x00\x07" + (b"\x00" if v == 5 else b""))
    if how == "sub_opts":
        return pkt(0x82, b"\x00\x07" + (b"\x00" if v == 5 else b"") + s16(b"fz/s") +
                   bytes([draw(st.sampled_from([3, 0x30, 0x40, 0x80, 0xC1, 0x04 if v == 4 else 0x3F]))]))
    if how == "sub_utf8":
        return pkt(0x82, b"\x00\x07" + (b"\x00" if v == 5 else b"") +
                   s16(draw(st.sampled_from(BAD_UTF8 + [b"", b"a/#/b", b"a+", b"#x"]))) + b"\x00")
    if how == "unsub_empty":
        return pkt(0xA2, b"\x00\x07" + (b"\x00" if v == 5 else b""))
    if how == "alias_over":
        # Over topic_alias_max (4): aliases 1-4 may have been set by an
        # earlier valid packet on the connection.
        return pkt(0x30, s16(b"") + props_block([(0x23, draw(st.integers(5, 65535)))]) + b"x") if v == 5 \
            else pkt(0x30, s16(b"fz/\xc0") + b"x")
    if how == "pid0_sub":
        return pkt(draw(st.sampled_from([0x82, 0xA2])), b"\x00\x00" + vp + s16(b"fz/a") + b"\x00")
    if how == "dup_q0":
        return pkt(0x38, s16(b"fz/d") + (b"\x00" if v == 5 else b""))
    return pkt(draw(st.sampled_from([0x00, 0xF0, 0x0F])), b"")


@st.composite
def bad_share_subscribe(draw, pid):
    """A 5.0 SUBSCRIBE (packet id pid) whose only filter is a malformed
    shared subscription ($share/ without a share name or filter, or a
    wildcard in the share name: 4.8.2). Refused either way: a SUBACK
    failure code (>= 0x80) for it or a DISCONNECT >= 0x80. (In 3.1.1 these
    are ordinary filters.)"""
    f = draw(st.sampled_from([b"$share/g", b"$share/g/", b"$share//a", b"$share/+/a", b"$share/#/a",
                              b"$share/a+b/x", b"$share/"]))
    return pkt(0x82, struct.pack(">H", pid) + b"\x00" + s16(f) + bytes([draw(st.integers(0, 2))]))


@st.composite
def bad_connect(draw, certain=False):
    """CONNECTs with something wrong: protocol name/level, reserved flag,
    will flags, bad UTF-8 client id or user name, password without user (3.1.1),
    bad properties; or a random mutation of a valid CONNECT (which may still
    be valid). certain=True: (bytes, is_certain), is_certain when any correct
    server must refuse it (every kind but the mutation)."""
    v = draw(st.sampled_from([4, 5]))
    how = draw(st.sampled_from(["name", "level", "reserved", "will_qos3", "will_no_flag",
                                "cid_utf8", "user_utf8", "props", "will_props", "short",
                                "mutate"]))
    name, level, flags, ka = b"MQTT", v, 0x02, 60
    pay = s16(b"fzc")
    vprops = b"\x00" if v == 5 else b""
    if how == "mutate":
        b = draw(mutate(draw(connect_pkt(v))))
        return (b, False) if certain else b
    if how == "name":
        name = draw(st.sampled_from([b"MQIsdp", b"MQTT\x00", b"mqtt", b"", b"MQT"]))
    elif how == "level":
        level = draw(st.sampled_from([0, 1, 2, 3, 6, 255]))
    elif how == "reserved":
        flags |= 1
    elif how == "will_qos3":
        flags |= 0x04 | 0x18
        pay += (b"\x00" if v == 5 else b"") + s16(b"fz/w") + s16(b"m")
    elif how == "will_no_flag":
        flags |= draw(st.sampled_from([0x08, 0x10, 0x20]))
    elif how == "cid_utf8":
        pay = s16(draw(st.sampled_from(BAD_UTF8)))
    elif how == "user_utf8":
        flags |= 0x80
        pay += s16(draw(st.sampled_from(BAD_UTF8)))
    elif how == "props":
        if v == 5:
            vprops = draw(bad_props(CONNECT))
        else:
            flags |= 0x40  # password without user name (3.1.1)
            pay += s16(b"pw")
    elif how == "will_props":
        flags |= 0x04
        pay += (draw(bad_props(0)) if v == 5 else b"") + s16(b"fz/w\xc0") + s16(b"m")
    else:  # the payload stops early
        pay = b"\x00"
    var = s16(name) + bytes([level, flags]) + struct.pack(">H", ka) + vprops
    b = pkt(0x10, var + pay)
    return (b, True) if certain else b


# ---- reading a peer's byte stream --------------------------------------------------

def split_packets(data):
    """Whole packets [(first byte, body)] in data and the leftover bytes;
    raises ValueError on a malformed remaining length."""
    out = []
    i = 0
    while i < len(data):
        n = shift = 0
        j = i + 1
        while True:
            if j >= len(data):
                return out, data[i:]
            b = data[j]
            n |= (b & 0x7F) << shift
            shift += 7
            j += 1
            if not b & 0x80:
                break
            if shift >= 28:
                raise ValueError("remaining length over 4 bytes at %d" % i)
        if j + n > len(data):
            return out, data[i:]
        out.append((data[i], data[j:j + n]))
        i = j + n
    return out, b""


# ---- server -> client packets (for fuzzing a client's decoder) -------------------

# CONNACK properties a client must accept; limits kept permissive so the
# client's later steps (QoS 1/2 publish, subscribe) are still allowed.
_CONNACK_OK = [0x11, 0x12, 0x13, 0x1F, 0x21, 0x22, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A]


@st.composite
def connack_pkt(draw, v, rc=0):
    body = bytes([0, rc])
    if v == 5:
        items = draw(valid_props(CONNACK, _CONNACK_OK))
        items = [(k, val) for k, val in items if not (k == 0x25 and val == 0)]
        body += props_block(items)
    return pkt(0x20, body)


@st.composite
def server_publish(draw, v, alias_max=2):
    q = draw(st.integers(0, 2))
    pid = draw(st.integers(1, 65535)) if q else 0
    body = s16(draw(topic()))
    if q:
        body += struct.pack(">H", pid)
    if v == 5:
        ok = [0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x26] + ([0x23] if alias_max else [])
        items = []
        for k, val in draw(valid_props(PUBLISH, ok)):
            if k == 0x23:
                val = 1 + (val - 1) % alias_max
            items.append((k, val))
        body += props_block(items)
        if any(k == 1 and val == 1 for k, val in items):
            body += draw(ustr).encode()
        else:
            body += draw(st.binary(max_size=40))
    else:
        body += draw(st.binary(max_size=40))
    first = 0x30 | (q << 1) | (1 if draw(st.booleans()) else 0) | (8 if q and draw(st.booleans()) else 0)
    return pkt(first, body)


@st.composite
def server_packet(draw, v, pid=1):
    """A structurally valid packet a server may send a client (acks for
    packet id `pid`, the client's first)."""
    kind = draw(st.sampled_from(["publish", "publish", "publish", "ack", "suback", "unsuback",
                                 "pingresp", "disconnect", "auth"] if v == 5 else
                                ["publish", "publish", "publish", "ack", "suback", "unsuback",
                                 "pingresp"]))
    if kind == "publish":
        return draw(server_publish(v))
    p = struct.pack(">H", draw(st.sampled_from([pid, pid, draw(st.integers(1, 65535))])))
    if kind == "ack":
        t = draw(st.sampled_from([PUBACK, PUBREC, PUBREL, PUBCOMP]))
        body = p
        if v == 5 and draw(st.booleans()):
            body += bytes([draw(st.sampled_from([0, 0x10, 0x80, 0x92, 0x97]))])
            if draw(st.booleans()):
                body += props_block(draw(valid_props(t)))
        return pkt((t << 4) | (2 if t == PUBREL else 0), body)
    if kind == "suback":
        body = p + (props_block(draw(valid_props(SUBACK))) if v == 5 else b"")
        codes = [0, 1, 2, 0x80] + ([0x87, 0x8F, 0x97, 0x9E, 0xA1, 0xA2] if v == 5 else [])
        return pkt(0x90, body + bytes(draw(st.lists(st.sampled_from(codes), min_size=1, max_size=2))))
    if kind == "unsuback":
        if v == 4:
            return pkt(0xB0, p)
        body = p + props_block(draw(valid_props(UNSUBACK)))
        codes = draw(st.lists(st.sampled_from([0, 0x11, 0x80, 0x87]), min_size=1, max_size=2))
        return pkt(0xB0, body + bytes(codes))
    if kind == "pingresp":
        return pkt(0xD0, b"")
    if kind == "disconnect":
        body = bytes([draw(st.sampled_from([0, 0x80, 0x81, 0x8B, 0x8E, 0x97, 0x9C]))])
        if draw(st.booleans()):
            body += props_block(draw(valid_props(DISCONNECT, [0x1F, 0x26, 0x1C])))
        return pkt(0xE0, body)
    return pkt(0xF0, bytes([0x18]) + props_block([(0x15, "TOY")]))


@st.composite
def bad_server_packet(draw, v, certain=False):
    """(bytes, certain): a malformed server packet; certain when any correct
    client must reject it as malformed or a protocol error (the others are
    random mutations that may still be valid). certain=True: only those."""
    how = "certain" if certain else \
        draw(st.sampled_from(["mutate", "mutate", "certain", "certain", "random"]))
    if how == "mutate":
        return draw(mutate(draw(server_packet(v)))), False
    if how == "random":
        return draw(st.binary(min_size=1, max_size=24)), False
    vp = b"\x00" if v == 5 else b""
    c = draw(st.sampled_from(["topic_utf8", "topic_wild", "qos3", "pid0", "dup_q0", "rl5", "type0",
                              "flags", "suback_code", "short_ack", "pub_props", "ack_props",
                              "connack_again", "subscribe"]))
    if c == "topic_utf8":
        return pkt(0x30, s16(b"fz/" + draw(st.sampled_from(BAD_UTF8))) + vp + b"x"), True
    if c == "topic_wild":
        return pkt(0x30, s16(draw(st.sampled_from([b"fz/+", b"fz/#", b"#"]))) + vp + b"x"), True
    if c == "qos3":
        return pkt(0x36, s16(b"fz/q") + b"\x00\x01" + vp), True
    if c == "pid0":
        return pkt(draw(st.sampled_from([0x32, 0x34])), s16(b"fz/q") + b"\x00\x00" + vp), True
    if c == "dup_q0":
        return pkt(0x38, s16(b"fz/q") + vp), True
    if c == "rl5":
        return bytes([draw(st.sampled_from([0x30, 0x90, 0xD0]))]) + b"\xff\xff\xff\xff\x7f", True
    if c == "type0":
        return pkt(0x00, b""), True
    if c == "flags":
        t = draw(st.sampled_from([0x20, 0x40, 0x50, 0x70, 0x90, 0xB0, 0xD0, 0xE0]))
        return bytes([t | draw(st.integers(1, 15))]) + b"\x00", True
    if c == "suback_code":
        return pkt(0x90, b"\x00\x01" + vp + bytes([draw(st.sampled_from([3, 0x7F, 0xFF, 0x10]))])), True
    if c == "short_ack":
        return pkt(draw(st.sampled_from([0x40, 0x50, 0x62, 0x70, 0x90, 0xB0])), b"\x00"), True
    if c == "pub_props":
        if v == 4:
            return pkt(0x30, s16(b"fz/\xc0")), True
        return pkt(0x30, s16(b"fz/pp") + draw(bad_props(PUBLISH)) + b"x"), True
    if c == "ack_props":
        if v == 4:
            return pkt(0x40, b"\x00"), True
        return pkt(0x40, b"\x00\x01\x00" + draw(bad_props(PUBACK))), True
    if c == "connack_again":
        return pkt(0x20, b"\x00\x00" + vp), True
    return pkt(0x82, b"\x00\x01" + vp + s16(b"fz/#") + b"\x00"), True


@st.composite
def bad_connack(draw, v, certain=False):
    """(bytes, certain) for a CONNACK that is wrong."""
    how = draw(st.sampled_from((["mutate"] if not certain else []) +
                               ["flags", "reserved_ack", "short", "props", "rc", "other"]))
    if certain and how == "props" and v == 4:
        how = "short"
    vp = b"\x00" if v == 5 else b""
    if how == "mutate":
        return draw(mutate(draw(connack_pkt(v)))), False
    if how == "flags":
        return pkt(0x20 | draw(st.integers(1, 15)), b"\x00\x00" + vp), True
    if how == "reserved_ack":
        return pkt(0x20, bytes([draw(st.integers(2, 255)), 0]) + vp), True
    if how == "short":
        return pkt(0x20, draw(st.sampled_from([b"", b"\x00"]))), True
    if how == "props":
        if v == 4:
            return pkt(0x20, b"\x00\x00\x00"), False  # trailing byte: 3.1.1 says length 2
        return pkt(0x20, b"\x00\x00" + draw(bad_props(CONNACK))), True
    if how == "rc":
        # A refusal: the client raises its code (not malformed, but an MQTTException).
        rc = draw(st.sampled_from([1, 2, 3, 4, 5] if v == 4 else [0x80, 0x84, 0x86, 0x87, 0x97, 0x9C]))
        return pkt(0x20, bytes([0, rc]) + vp), True
    return draw(st.sampled_from([pkt(0x90, b"\x00\x01\x00"), pkt(0x30, s16(b"fz/a")), pkt(0xD0, b""),
                                 b"\x20\xff\xff\xff\xff\x7f"])), True
