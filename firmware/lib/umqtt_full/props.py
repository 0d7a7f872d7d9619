# MQTT 5.0 properties (spec 2.2.2.2): a table of id -> (type, packets allowed),
# a size/encode pair for dicts {id: value}, a strict decoder to a dict, and a
# scan that validates a PUBLISH's or ack's properties without allocating.
from .errors import MQTTException, MALFORMED, PROTOCOL_ERROR
from .wire import (varint_size, put_varint, get_varint, get_u16, get_u32, need,
                   put_u16, put_u32, put_bin, to_bytes)
from .topic import check_utf8

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

# Property identifiers (public: users pass them as dict keys).
PAYLOAD_FORMAT = 0x01
MESSAGE_EXPIRY = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_ID = 0x0B
SESSION_EXPIRY = 0x11
ASSIGNED_CLIENT_ID = 0x12
SERVER_KEEPALIVE = 0x13
AUTH_METHOD = 0x15
AUTH_DATA = 0x16
REQUEST_PROBLEM_INFO = 0x17
WILL_DELAY = 0x18
REQUEST_RESPONSE_INFO = 0x19
RESPONSE_INFO = 0x1A
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUB_AVAILABLE = 0x28
SUB_ID_AVAILABLE = 0x29
SHARED_SUB_AVAILABLE = 0x2A

_BYTE = const(1)
_U16 = const(2)
_U32 = const(3)
_VARINT = const(4)
_STR = const(5)
_BIN = const(6)
_PAIR = const(7)

# Where a property may appear: bit n is packet type n; bit 0 is the Will.
WILL = 0
_W = const(1 << 0)
_CONNECT = const(1 << 1)
_CONNACK = const(1 << 2)
_PUBLISH = const(1 << 3)
_ACKS = const((1 << 4) | (1 << 5) | (1 << 6) | (1 << 7))  # PUBACK..PUBCOMP
_SUBSCRIBE = const(1 << 8)
_SUBACK = const(1 << 9)
_UNSUBACK = const(1 << 11)
_DISCONNECT = const(1 << 14)
_AUTH = const(1 << 15)
_ALL = const(0xFFFF & ~((1 << 12) | (1 << 13)))  # every packet with properties

SPEC = {
    PAYLOAD_FORMAT: (_BYTE, _PUBLISH | _W),
    MESSAGE_EXPIRY: (_U32, _PUBLISH | _W),
    CONTENT_TYPE: (_STR, _PUBLISH | _W),
    RESPONSE_TOPIC: (_STR, _PUBLISH | _W),
    CORRELATION_DATA: (_BIN, _PUBLISH | _W),
    SUBSCRIPTION_ID: (_VARINT, _PUBLISH | _SUBSCRIBE),
    SESSION_EXPIRY: (_U32, _CONNECT | _CONNACK | _DISCONNECT),
    ASSIGNED_CLIENT_ID: (_STR, _CONNACK),
    SERVER_KEEPALIVE: (_U16, _CONNACK),
    AUTH_METHOD: (_STR, _CONNECT | _CONNACK | _AUTH),
    AUTH_DATA: (_BIN, _CONNECT | _CONNACK | _AUTH),
    REQUEST_PROBLEM_INFO: (_BYTE, _CONNECT),
    WILL_DELAY: (_U32, _W),
    REQUEST_RESPONSE_INFO: (_BYTE, _CONNECT),
    RESPONSE_INFO: (_STR, _CONNACK),
    SERVER_REFERENCE: (_STR, _CONNACK | _DISCONNECT),
    REASON_STRING: (_STR, _CONNACK | _ACKS | _SUBACK | _UNSUBACK | _DISCONNECT | _AUTH),
    RECEIVE_MAXIMUM: (_U16, _CONNECT | _CONNACK),
    TOPIC_ALIAS_MAXIMUM: (_U16, _CONNECT | _CONNACK),
    TOPIC_ALIAS: (_U16, _PUBLISH),
    MAXIMUM_QOS: (_BYTE, _CONNACK),
    RETAIN_AVAILABLE: (_BYTE, _CONNACK),
    USER_PROPERTY: (_PAIR, _ALL | _W),
    MAXIMUM_PACKET_SIZE: (_U32, _CONNECT | _CONNACK),
    WILDCARD_SUB_AVAILABLE: (_BYTE, _CONNACK),
    SUB_ID_AVAILABLE: (_BYTE, _CONNACK),
    SHARED_SUB_AVAILABLE: (_BYTE, _CONNACK),
}

# Byte properties that may only be 0 or 1.
_BOOLS = (PAYLOAD_FORMAT, REQUEST_PROBLEM_INFO, REQUEST_RESPONSE_INFO, MAXIMUM_QOS,
          RETAIN_AVAILABLE, WILDCARD_SUB_AVAILABLE, SUB_ID_AVAILABLE, SHARED_SUB_AVAILABLE)
# Properties for which zero is a protocol error.
_NONZERO = (RECEIVE_MAXIMUM, MAXIMUM_PACKET_SIZE, TOPIC_ALIAS, SUBSCRIPTION_ID)


def _repeats(pid, v):
    # Lists repeat an id (user properties, subscription identifiers).
    return isinstance(v, list) and (pid == USER_PROPERTY or pid == SUBSCRIPTION_ID)


def _value_size(t, v):
    if t == _BYTE:
        return 1
    if t == _U16:
        return 2
    if t == _U32:
        return 4
    if t == _VARINT:
        return varint_size(v)
    if t == _PAIR:
        return 4 + len(to_bytes(v[0])) + len(to_bytes(v[1]))
    return 2 + len(to_bytes(v))


def size(props):
    # Bytes of the property list, without its length prefix. Plain loops, no
    # generator: sizing and writing int/bytes properties allocates nothing,
    # so a v5 PUBLISH with properties stays off the heap.
    n = 0
    if props:
        for pid in props:
            spec = SPEC.get(pid)
            if spec is None:
                raise MQTTException(MALFORMED, "unknown property 0x%02x" % pid)
            v = props[pid]
            if _repeats(pid, v):
                for x in v:
                    n += 1 + _value_size(spec[0], x)
            else:
                n += 1 + _value_size(spec[0], v)
    return n


def put(buf, off, props, n):
    # Length prefix then the properties; n is size(props).
    off = put_varint(buf, off, n)
    return put_body(buf, off, props) if n else off


def put_body(buf, off, props):
    # The properties alone, for a caller that writes the length itself.
    for pid in props:
        v = props[pid]
        if _repeats(pid, v):
            for x in v:
                off = _put_one(buf, off, pid, x)
        else:
            off = _put_one(buf, off, pid, v)
    return off


def _put_one(buf, off, pid, v):
    t = SPEC[pid][0]
    buf[off] = pid
    off += 1
    if t == _BYTE:
        buf[off] = v
        return off + 1
    if t == _U16:
        return put_u16(buf, off, v)
    if t == _U32:
        return put_u32(buf, off, v)
    if t == _VARINT:
        return put_varint(buf, off, v)
    if t == _PAIR:
        off = put_bin(buf, off, to_bytes(v[0]))
        return put_bin(buf, off, to_bytes(v[1]))
    return put_bin(buf, off, to_bytes(v))


def _check_allowed(pid, where):
    spec = SPEC.get(pid)
    # 2.2.2.2: an identifier not valid for the packet type is a Malformed Packet.
    if spec is None or not spec[1] & (1 << where):
        raise MQTTException(MALFORMED, "property 0x%02x not allowed here" % pid)
    return spec[0]


def _skip(buf, off, end, t):
    # Offset after a value of type t, validating strings.
    if t == _BYTE:
        need(off, 1, end)
        return off + 1
    if t == _U16:
        need(off, 2, end)
        return off + 2
    if t == _U32:
        need(off, 4, end)
        return off + 4
    if t == _VARINT:
        v = get_varint(buf, off, end)
        if v < 0:
            raise MQTTException(MALFORMED, "truncated property")
        return off + varint_size(v)
    n = get_u16(buf, off, end)
    need(off + 2, n, end)
    if t != _BIN:
        check_utf8(buf, off + 2, n)
    off += 2 + n
    if t == _PAIR:
        n = get_u16(buf, off, end)
        need(off + 2, n, end)
        check_utf8(buf, off + 2, n)
        off += 2 + n
    return off


def _check_value(pid, t, buf, off, end):
    if t == _BYTE:
        v = buf[off]
        if pid in _BOOLS and v > 1:
            raise MQTTException(PROTOCOL_ERROR, "property 0x%02x must be 0 or 1" % pid)
        return v
    if t == _U16:
        v = get_u16(buf, off, end)
    elif t == _U32:
        v = get_u32(buf, off, end)
    elif t == _VARINT:
        v = get_varint(buf, off, end)
    else:
        return -1
    if v == 0 and pid in _NONZERO:
        raise MQTTException(PROTOCOL_ERROR, "property 0x%02x must not be 0" % pid)
    return v


def length(buf, off, end):
    # The property length at off; it must fit in the packet.
    n = get_varint(buf, off, end)
    if n < 0:
        raise MQTTException(MALFORMED, "truncated property length")
    need(off + varint_size(n), n, end)
    return n


def scan(buf, off, end, where, pkt):
    # Validate a property list (off points at its length) without allocating;
    # record what a PUBLISH needs in pkt. Returns the offset after the list.
    n = length(buf, off, end)
    off += varint_size(n)
    pend = off + n
    pkt.props_off = off
    pkt.props_end = pend
    pkt.alias = 0
    pkt.expiry = -1
    pkt.pfi = 0
    seen_lo = 0  # ids 0..29 seen; two ints keep it a small int on 32-bit ports
    seen_hi = 0  # ids 30..59
    while off < pend:
        pid = buf[off]
        if pid & 0x80:
            raise MQTTException(MALFORMED, "property id over one byte")
        t = _check_allowed(pid, where)
        off += 1
        # Only user properties (and subscription ids in PUBLISH) may repeat.
        if pid != USER_PROPERTY and not (pid == SUBSCRIPTION_ID and where == 3):
            if pid < 30:
                bit = 1 << pid
                if seen_lo & bit:
                    raise MQTTException(PROTOCOL_ERROR, "duplicate property 0x%02x" % pid)
                seen_lo |= bit
            else:
                bit = 1 << (pid - 30)
                if seen_hi & bit:
                    raise MQTTException(PROTOCOL_ERROR, "duplicate property 0x%02x" % pid)
                seen_hi |= bit
        nxt = _skip(buf, off, pend, t)  # bounds and UTF-8 first
        v = _check_value(pid, t, buf, off, pend)
        if pid == TOPIC_ALIAS:
            pkt.alias = v
        elif pid == MESSAGE_EXPIRY:
            pkt.expiry = v
        elif pid == PAYLOAD_FORMAT:
            pkt.pfi = v
        off = nxt
    return pend


class _Sink:
    # scan() records into an object; decode() does not need what it records.
    props_off = props_end = alias = expiry = pfi = 0


_sink = _Sink()


def decode(buf, off, end, where):
    # Validated property list at off -> (dict, offset after it). Allocates:
    # for CONNECT, CONNACK, SUBSCRIBE ... and a PUBLISH whose reader asks.
    pend = scan(buf, off, end, where, _sink)
    off = _sink.props_off
    d = {}
    while off < pend:
        pid = buf[off]
        t = SPEC[pid][0]
        off += 1
        if t == _BYTE:
            v = buf[off]
        elif t == _U16:
            v = get_u16(buf, off, pend)
        elif t == _U32:
            v = get_u32(buf, off, pend)
        elif t == _VARINT:
            v = get_varint(buf, off, pend)
        else:
            n = get_u16(buf, off, pend)
            v = bytes(buf[off + 2:off + 2 + n])
            if t != _BIN:
                v = v.decode()
            if t == _PAIR:
                o2 = off + 2 + n
                n2 = get_u16(buf, o2, pend)
                v = (v, bytes(buf[o2 + 2:o2 + 2 + n2]).decode())
        off = _skip(buf, off, pend, t)
        if pid == USER_PROPERTY or pid == SUBSCRIPTION_ID:
            d.setdefault(pid, []).append(v)
        else:
            d[pid] = v
    return d, pend
