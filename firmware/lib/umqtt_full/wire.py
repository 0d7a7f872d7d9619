# Wire primitives shared by the packet and property codecs: variable byte
# integers, two-byte integers and length-prefixed strings over (buf, offset).
from .errors import MQTTException, MALFORMED

MAX_VARINT = 268435455


def varint_size(n):
    if n < 128:
        return 1
    if n < 16384:
        return 2
    if n < 2097152:
        return 3
    if n <= MAX_VARINT:
        return 4
    raise MQTTException(MALFORMED, "length over 268435455")


def put_varint(buf, off, n):
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            buf[off] = b | 0x80
            off += 1
        else:
            buf[off] = b
            return off + 1


def get_varint(buf, off, end):
    # The value, or -1 when the bytes end before it does. The length read is
    # varint_size(value): only the shortest encoding is accepted [MQTT-1.5.5-1].
    n = 0
    shift = 0
    i = off
    while i < end:
        b = buf[i]
        n |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            if i - off > 1 and b == 0:
                raise MQTTException(MALFORMED, "non-minimal variable byte integer")
            return n
        shift += 7
        if shift == 28:
            raise MQTTException(MALFORMED, "variable byte integer over 4 bytes")
    return -1


def need(off, n, end):
    # Every read checks the packet still has n bytes, so a short packet is
    # malformed instead of reading the next packet's bytes.
    if off + n > end:
        raise MQTTException(MALFORMED, "packet too short")


def get_u16(buf, off, end):
    need(off, 2, end)
    return buf[off] << 8 | buf[off + 1]


def get_u32(buf, off, end):
    need(off, 4, end)
    return buf[off] << 24 | buf[off + 1] << 16 | buf[off + 2] << 8 | buf[off + 3]


def put_u16(buf, off, n):
    buf[off] = n >> 8
    buf[off + 1] = n & 0xFF
    return off + 2


def put_u32(buf, off, n):
    buf[off] = (n >> 24) & 0xFF
    buf[off + 1] = (n >> 16) & 0xFF
    buf[off + 2] = (n >> 8) & 0xFF
    buf[off + 3] = n & 0xFF
    return off + 4


def to_bytes(s):
    # Strings go out as UTF-8; bytes-like objects go out as they are.
    if isinstance(s, str):
        return s.encode()
    return s


def put_bin(buf, off, b):
    # Two-byte length then the bytes: UTF-8 strings and binary data alike.
    n = len(b)
    if n > 65535:
        raise MQTTException(MALFORMED, "string over 65535 bytes")
    buf[off] = n >> 8
    buf[off + 1] = n & 0xFF
    off += 2
    buf[off:off + n] = b
    return off + n


def get_bin(buf, off, end):
    # A copy of a two-byte-length-prefixed field, for the packets that are
    # not on a hot path (CONNECT, SUBSCRIBE ...).
    n = get_u16(buf, off, end)
    need(off + 2, n, end)
    return bytes(buf[off + 2:off + 2 + n])
