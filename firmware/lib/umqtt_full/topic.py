# Topic names and filters: validation and matching over (buffer, offset, length)
# so the broker can match a topic that is still in its receive buffer against
# filters in its preallocated table without slicing (slices allocate).
from .errors import MQTTException, MALFORMED, TOPIC_INVALID, FILTER_INVALID

try:
    from micropython import const
except ImportError:  # CPython runs the same code in the host tests
    def const(x):
        return x

_SLASH = const(0x2F)
_PLUS = const(0x2B)
_HASH = const(0x23)
_DOLLAR = const(0x24)

try:
    import micropython

    @micropython.viper
    def _scan(buf: ptr8, off: int, n: int) -> int:
        # One pass over a topic: 1 on a wildcard or NUL, else 2 when any byte
        # is not ASCII (the full UTF-8 check must run), else 0.
        i = off
        end = off + n
        r = 0
        while i < end:
            c = buf[i]
            if c == 0x2B or c == 0x23 or c == 0:
                return 1
            if c > 0x7F:
                r = 2
            i += 1
        return r
except (ImportError, AttributeError, SyntaxError, NameError):
    def _scan(buf, off, n):
        return 2


def check_utf8(buf, off, n):
    # Well-formed UTF-8, no U+0000, no surrogates, no overlongs.
    # [MQTT-1.5.3-1] malformed UTF-8 and [MQTT-1.5.3-2] U+0000 close the connection.
    i = off
    end = off + n
    while i < end:
        c = buf[i]
        if 0 < c < 0x80:
            i += 1
            continue
        if c == 0:
            raise MQTTException(MALFORMED, "U+0000 in string")
        if 0xC2 <= c <= 0xDF:
            k = 1
        elif 0xE0 <= c <= 0xEF:
            k = 2
        elif 0xF0 <= c <= 0xF4:
            k = 3
        else:
            raise MQTTException(MALFORMED, "bad UTF-8")
        if i + k >= end:
            raise MQTTException(MALFORMED, "truncated UTF-8")
        c1 = buf[i + 1]
        if c1 & 0xC0 != 0x80:
            raise MQTTException(MALFORMED, "bad UTF-8")
        # Second-byte ranges exclude overlongs (E0, F0), surrogates (ED) and > U+10FFFF (F4).
        if (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 > 0x9F) or \
           (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 > 0x8F):
            raise MQTTException(MALFORMED, "bad UTF-8")
        j = 2
        while j <= k:
            if buf[i + j] & 0xC0 != 0x80:
                raise MQTTException(MALFORMED, "bad UTF-8")
            j += 1
        i += k + 1


def check_topic(buf, off, n):
    # A PUBLISH topic name. [MQTT-4.7.3-1] at least one character;
    # [MQTT-3.3.2-2] no wildcards in a topic name.
    if n == 0:
        raise MQTTException(TOPIC_INVALID, "empty topic")
    if not _scan(buf, off, n):
        return  # plain ASCII without wildcards: the usual topic, checked at C speed
    i = off
    end = off + n
    while i < end:
        c = buf[i]
        if c == _PLUS or c == _HASH:
            raise MQTTException(TOPIC_INVALID, "wildcard in topic name")
        i += 1
    check_utf8(buf, off, n)


def check_filter(buf, off, n):
    # [MQTT-4.7.3-1] non-empty; [MQTT-4.7.1-2] '#' alone in its level and last;
    # [MQTT-4.7.1-3] '+' alone in its level.
    if n == 0:
        raise MQTTException(FILTER_INVALID, "empty filter")
    end = off + n
    i = off
    while i < end:
        c = buf[i]
        if c == _HASH:
            if i != end - 1 or (i > off and buf[i - 1] != _SLASH):
                raise MQTTException(FILTER_INVALID, "'#' not alone and last")
        elif c == _PLUS:
            if (i > off and buf[i - 1] != _SLASH) or (i < end - 1 and buf[i + 1] != _SLASH):
                raise MQTTException(FILTER_INVALID, "'+' not alone in its level")
        i += 1
    check_utf8(buf, off, n)


def match(fb, fo, fn, tb, to, tn):
    # Does filter fb[fo:fo+fn] match topic tb[to:to+tn]? No allocation.
    # [MQTT-4.7.2-1] a leading wildcard does not match a topic starting with '$'.
    if tn and tb[to] == _DOLLAR and fn and (fb[fo] == _PLUS or fb[fo] == _HASH):
        return False
    fi = fo
    fe = fo + fn
    ti = to
    te = to + tn
    while fi < fe:
        c = fb[fi]
        if c == _HASH:
            # '#' also matches the parent level: "a/#" matches "a".
            return True
        if c == _PLUS:
            # Skip one topic level.
            while ti < te and tb[ti] != _SLASH:
                ti += 1
            fi += 1
        else:
            # Compare up to the end of this filter level.
            while fi < fe and fb[fi] != _SLASH:
                if ti >= te or tb[ti] != fb[fi]:
                    return False
                fi += 1
                ti += 1
            if ti < te and tb[ti] != _SLASH:
                return False
        # Both at a separator or an end.
        if fi >= fe:
            return ti >= te
        # fb[fi] is '/'
        if ti >= te:
            # Topic ended; only "/#" may follow in the filter.
            return fi + 2 == fe and fb[fi + 1] == _HASH
        fi += 1
        ti += 1
    # The filter ended right after a '/': the topic must end there too.
    return ti >= te


def matches(filt, topic):
    # Convenience form over whole bytes/str objects.
    if isinstance(filt, str):
        filt = filt.encode()
    if isinstance(topic, str):
        topic = topic.encode()
    return match(filt, 0, len(filt), topic, 0, len(topic))


def is_wild(buf, off, n):
    end = off + n
    while off < end:
        c = buf[off]
        if c == _PLUS or c == _HASH:
            return True
        off += 1
    return False
