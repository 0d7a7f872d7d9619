# Pure encode/decode of every MQTT 3.1.1 and 5.0 control packet into and out of
# caller-owned buffers. No I/O. Encoders size the packet first and raise before
# writing a byte when it does not fit; they return the bytes written. PUBLISH,
# the acks and pings encode, and PUBLISH/acks decode, without allocating: a
# decoded PUBLISH is offsets into the caller's buffer, kept in a reused Packet.
from .errors import (MQTTException, MALFORMED, PROTOCOL_ERROR, UNSUPPORTED_VERSION,
                     PACKET_TOO_LARGE)
from .wire import (varint_size, put_varint, get_varint, get_u16, need, put_u16,
                   put_bin, get_bin, to_bytes, MAX_VARINT)
from .topic import check_utf8, check_topic, check_filter
from . import props as _props

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
PUBREC = const(5)
PUBREL = const(6)
PUBCOMP = const(7)
SUBSCRIBE = const(8)
SUBACK = const(9)
UNSUBSCRIBE = const(10)
UNSUBACK = const(11)
PINGREQ = const(12)
PINGRESP = const(13)
DISCONNECT = const(14)
AUTH = const(15)

V311 = const(4)
V5 = const(5)

# Subscription option bits (MQTT 5.0, 3.8.3.1); the low two bits are the QoS.
NO_LOCAL = const(0x04)
RETAIN_AS_PUBLISHED = const(0x08)
RETAIN_HANDLING_SHIFT = const(4)


class Packet:
    # One decoded packet. The decoder reuses the same attributes every time, so
    # decoding a PUBLISH or an ack allocates nothing; the fields of packets off
    # the hot path (connect, topics, codes, props) hold new objects.
    def __init__(self):
        self.type = 0
        self.flags = 0
        self.qos = 0
        self.dup = False
        self.retain = False
        self.pid = 0
        self.reason = 0
        self.topic_off = 0
        self.topic_len = 0
        self.payload_off = 0
        self.payload_len = 0
        self.props_off = 0
        self.props_end = 0
        self.alias = 0
        self.expiry = -1
        self.pfi = 0
        self.session_present = False
        self.props = None  # dict, for packets off the hot path
        self.connect = None  # Connect, for CONNECT
        self.topics = None  # SUBSCRIBE: [(filter, options)]; UNSUBSCRIBE: [filter]
        self.codes = None  # SUBACK/UNSUBACK reason codes (bytes)


class Will:
    def __init__(self, topic, msg, qos=0, retain=False, props=None):
        self.topic = to_bytes(topic)
        self.msg = to_bytes(msg)
        self.qos = qos
        self.retain = retain
        self.props = props


class Connect:
    def __init__(self):
        self.version = V311
        self.clean = True
        self.keepalive = 0
        self.client_id = ""
        self.user = None
        self.password = None
        self.will = None
        self.props = None


# ---- framing ---------------------------------------------------------------

def remaining_length(buf, off, end):
    # The remaining length of the packet starting at off, or -1 when its fixed
    # header is not complete yet. The header is 1 + varint_size(rl) bytes.
    if end - off < 2:
        return -1
    return get_varint(buf, off + 1, end)


def packet_size(rl):
    # Total bytes of a packet whose remaining length is rl.
    return 1 + varint_size(rl) + rl


def _room(buf, n):
    if n > len(buf):
        raise MQTTException(PACKET_TOO_LARGE, "packet of %d bytes over buffer of %d" % (n, len(buf)))


def _begin(buf, first, rl):
    # Check the whole packet fits, then write its fixed header. Over the
    # largest remaining length it cannot fit any buffer: 0x95 as well.
    if rl > MAX_VARINT:
        raise MQTTException(PACKET_TOO_LARGE, "remaining length %d over 268435455" % rl)
    _room(buf, 1 + varint_size(rl) + rl)
    buf[0] = first
    return put_varint(buf, 1, rl)


def _psize(props, version):
    # Bytes of a property block (length prefix included), 0 for 3.1.1.
    if version < V5:
        return 0
    n = _props.size(props)
    return varint_size(n) + n


def _put_props(buf, off, props, version):
    if version < V5:
        return off
    return _props.put(buf, off, props, _props.size(props))


# ---- encoders ---------------------------------------------------------------

def encode_publish(buf, topic, payload, qos=0, retain=False, dup=False, pid=0,
                   version=V311, props=None, alias=0):
    # topic and payload are bytes-like (a str costs an encode). With alias set
    # (v5) a Topic Alias property is written; an empty topic then sends the
    # alias alone.
    tn = len(topic)
    pn = len(payload)
    rl = 2 + tn + pn
    if qos:
        rl += 2
    plen = 0
    if version >= V5:
        if props:
            plen = _props.size(props)
        if alias:
            plen += 3
        rl += varint_size(plen) + plen
    off = _begin(buf, 0x30 | (dup << 3) | (qos << 1) | retain, rl)
    buf[off] = tn >> 8
    buf[off + 1] = tn & 0xFF
    off += 2
    buf[off:off + tn] = topic
    off += tn
    if qos:
        buf[off] = pid >> 8
        buf[off + 1] = pid & 0xFF
        off += 2
    if version >= V5:
        off = put_varint(buf, off, plen)
        if props:
            off = _props.put_body(buf, off, props)
        if alias:
            buf[off] = 0x23
            buf[off + 1] = alias >> 8
            buf[off + 2] = alias & 0xFF
            off += 3
    buf[off:off + pn] = payload
    return off + pn


def encode_ack(buf, ptype, pid, reason=0, version=V311, props=None):
    # PUBACK, PUBREC, PUBREL, PUBCOMP. v5 drops the reason when it is 0 and
    # there are no properties (3.4.2.1), as mosquitto does.
    first = (ptype << 4) | (2 if ptype == PUBREL else 0)
    if version < V5 or (not reason and not props):
        _room(buf, 4)
        buf[0] = first
        buf[1] = 2
        buf[2] = pid >> 8
        buf[3] = pid & 0xFF
        return 4
    if not props:
        _room(buf, 5)
        buf[0] = first
        buf[1] = 3
        buf[2] = pid >> 8
        buf[3] = pid & 0xFF
        buf[4] = reason
        return 5
    rl = 3 + _psize(props, version)
    off = _begin(buf, first, rl)
    off = put_u16(buf, off, pid)
    buf[off] = reason
    return _put_props(buf, off + 1, props, version)


def encode_ping(buf, ptype=PINGREQ):
    _room(buf, 2)
    buf[0] = ptype << 4
    buf[1] = 0
    return 2


def encode_connect(buf, client_id, clean=True, keepalive=0, user=None, password=None,
                   will=None, version=V311, props=None):
    cid = to_bytes(client_id)
    rl = 10 + 2 + len(cid) + _psize(props, version)
    flags = 0x02 if clean else 0
    if will is not None:
        if will.qos > 2:
            raise ValueError("will QoS")
        rl += 4 + len(will.topic) + len(will.msg) + _psize(will.props, version)
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if user is not None:
        user = to_bytes(user)
        rl += 2 + len(user)
        flags |= 0x80
    if password is not None:
        if user is None and version < V5:
            raise ValueError("3.1.1 needs a user name with a password")
        password = to_bytes(password)
        rl += 2 + len(password)
        flags |= 0x40
    off = _begin(buf, CONNECT << 4, rl)
    off = put_bin(buf, off, b"MQTT")
    buf[off] = version
    buf[off + 1] = flags
    off = put_u16(buf, off + 2, keepalive)
    off = _put_props(buf, off, props, version)
    off = put_bin(buf, off, cid)
    if will is not None:
        off = _put_props(buf, off, will.props, version)
        off = put_bin(buf, off, will.topic)
        off = put_bin(buf, off, will.msg)
    if user is not None:
        off = put_bin(buf, off, user)
    if password is not None:
        off = put_bin(buf, off, password)
    return off


def encode_connack(buf, session_present, reason, version=V311, props=None):
    off = _begin(buf, CONNACK << 4, 2 + _psize(props, version))
    buf[off] = 1 if session_present else 0
    buf[off + 1] = reason
    return _put_props(buf, off + 2, props, version)


def encode_subscribe(buf, pid, topics, version=V311, props=None):
    # topics: [(filter, options)], options = QoS | NO_LOCAL | RETAIN_AS_PUBLISHED
    # | retain_handling << 4 (v5 only beyond the QoS).
    rl = 2 + _psize(props, version)
    for f, _ in topics:
        rl += 3 + len(to_bytes(f))
    off = _begin(buf, (SUBSCRIBE << 4) | 2, rl)
    off = put_u16(buf, off, pid)
    off = _put_props(buf, off, props, version)
    for f, o in topics:
        off = put_bin(buf, off, to_bytes(f))
        buf[off] = o
        off += 1
    return off


def _encode_codes(buf, ptype, pid, codes, version, props, with_codes=True):
    rl = 2 + _psize(props, version) + (len(codes) if with_codes else 0)
    off = _begin(buf, ptype << 4, rl)
    off = put_u16(buf, off, pid)
    off = _put_props(buf, off, props, version)
    if with_codes:
        n = len(codes)
        buf[off:off + n] = bytes(codes)
        off += n
    return off


def encode_suback(buf, pid, codes, version=V311, props=None):
    return _encode_codes(buf, SUBACK, pid, codes, version, props)


def encode_unsubscribe(buf, pid, topics, version=V311, props=None):
    rl = 2 + _psize(props, version)
    for f in topics:
        rl += 2 + len(to_bytes(f))
    off = _begin(buf, (UNSUBSCRIBE << 4) | 2, rl)
    off = put_u16(buf, off, pid)
    off = _put_props(buf, off, props, version)
    for f in topics:
        off = put_bin(buf, off, to_bytes(f))
    return off


def encode_unsuback(buf, pid, codes=(), version=V311, props=None):
    # 3.1.1 UNSUBACK has no payload.
    return _encode_codes(buf, UNSUBACK, pid, codes, version, props, version >= V5)


def _encode_reason(buf, ptype, reason, version, props):
    # DISCONNECT and AUTH: empty when the reason is 0 and there are no
    # properties (3.14.2.1, 3.15.2.1), and always empty in 3.1.1. A reason
    # without properties leaves out the property length (3.14.2.2.1), as the
    # acks do and as mosquitto and paho send it.
    if version < V5 or (not reason and not props):
        _room(buf, 2)
        buf[0] = ptype << 4
        buf[1] = 0
        return 2
    if not props:
        _room(buf, 3)
        buf[0] = ptype << 4
        buf[1] = 1
        buf[2] = reason
        return 3
    off = _begin(buf, ptype << 4, 1 + _psize(props, version))
    buf[off] = reason
    return _put_props(buf, off + 1, props, version)


def encode_disconnect(buf, reason=0, version=V311, props=None):
    return _encode_reason(buf, DISCONNECT, reason, version, props)


def encode_auth(buf, reason=0, props=None):
    return _encode_reason(buf, AUTH, reason, V5, props)


# ---- decoders ---------------------------------------------------------------

def decode(pkt, buf, off, end, version=V311):
    # Decode the whole packet buf[off:end] into pkt and return its type.
    # version is the connection's (a CONNECT sets its own). Raises
    # MQTTException carrying the reason code on anything malformed.
    first = buf[off]
    rl = get_varint(buf, off + 1, end)
    if rl < 0:
        raise MQTTException(MALFORMED, "truncated fixed header")
    p = off + 1 + varint_size(rl)
    if p + rl != end:
        raise MQTTException(MALFORMED, "remaining length does not match packet")
    t = first >> 4
    f = first & 0x0F
    pkt.type = t
    pkt.flags = f
    if t == PUBLISH:
        _decode_publish(pkt, buf, p, end, f, version)
        return t
    # [MQTT-2.2.2-1] [MQTT-2.2.2-2] reserved flag bits: 0010 for PUBREL,
    # SUBSCRIBE, UNSUBSCRIBE and 0000 for the others.
    if f != (2 if t == PUBREL or t == SUBSCRIBE or t == UNSUBSCRIBE else 0):
        raise MQTTException(MALFORMED, "reserved fixed header flags")
    if PUBACK <= t <= PUBCOMP:
        _decode_ack(pkt, buf, p, end, t, version)
    elif t == PINGREQ or t == PINGRESP:
        if rl:
            raise MQTTException(MALFORMED, "ping with a body")
    elif t == CONNECT:
        _decode_connect(pkt, buf, p, end)
    elif t == CONNACK:
        _decode_connack(pkt, buf, p, end, version)
    elif t == SUBSCRIBE:
        _decode_subscribe(pkt, buf, p, end, version)
    elif t == SUBACK or t == UNSUBACK:
        _decode_codes(pkt, buf, p, end, t, version)
    elif t == UNSUBSCRIBE:
        _decode_unsubscribe(pkt, buf, p, end, version)
    elif t == DISCONNECT or (t == AUTH and version >= V5):
        _decode_reason(pkt, buf, p, end, t, version)
    else:
        # Type 0 is reserved; AUTH does not exist in 3.1.1.
        raise MQTTException(MALFORMED, "reserved packet type %d" % t)
    return t


def _decode_publish(pkt, buf, p, end, f, version):
    qos = (f >> 1) & 3
    if qos == 3:
        raise MQTTException(MALFORMED, "QoS 3")  # [MQTT-3.3.1-4]
    dup = bool(f & 8)
    if dup and not qos:
        raise MQTTException(MALFORMED, "DUP set on QoS 0")  # [MQTT-3.3.1-2]
    pkt.qos = qos
    pkt.dup = dup
    pkt.retain = bool(f & 1)
    tn = get_u16(buf, p, end)
    p += 2
    need(p, tn, end)
    pkt.topic_off = p
    pkt.topic_len = tn
    if tn or version < V5:
        check_topic(buf, p, tn)  # [MQTT-3.3.2-1] [MQTT-3.3.2-2] [MQTT-4.7.3-1]
    p += tn
    pkt.pid = 0
    if qos:
        pkt.pid = get_u16(buf, p, end)
        if not pkt.pid:
            raise MQTTException(PROTOCOL_ERROR, "packet identifier 0")  # [MQTT-2.3.1-1]
        p += 2
    if version >= V5:
        p = _props.scan(buf, p, end, PUBLISH, pkt)
        if not tn and not pkt.alias:
            # [MQTT-3.3.2-8] an empty topic needs a Topic Alias
            raise MQTTException(PROTOCOL_ERROR, "empty topic without a topic alias")
    else:
        pkt.props_off = pkt.props_end = p
        pkt.alias = 0
        pkt.expiry = -1
        pkt.pfi = 0
    pkt.payload_off = p
    pkt.payload_len = end - p


def _decode_ack(pkt, buf, p, end, t, version):
    rl = end - p
    pkt.pid = get_u16(buf, p, end)
    if not pkt.pid:
        raise MQTTException(PROTOCOL_ERROR, "packet identifier 0")  # [MQTT-2.3.1-1]
    pkt.reason = 0
    pkt.props_off = pkt.props_end = end
    if version < V5:
        if rl != 2:
            raise MQTTException(MALFORMED, "ack of %d bytes" % rl)
        return
    if rl > 2:
        pkt.reason = buf[p + 2]
        if rl > 3:
            if _props.scan(buf, p + 3, end, t, pkt) != end:
                raise MQTTException(MALFORMED, "bytes after ack properties")


def _decode_connect(pkt, buf, p, end):
    c = Connect()
    name = get_u16(buf, p, end)
    need(p + 2, name + 2, end)
    # [MQTT-3.1.2-1] the protocol name must be "MQTT"; levels 4 and 5 only [MQTT-3.1.2-2]
    if name != 4 or buf[p + 2:p + 6] != b"MQTT":
        raise MQTTException(UNSUPPORTED_VERSION, "protocol name")
    p += 6
    level = buf[p]
    if level != V311 and level != V5:
        raise MQTTException(UNSUPPORTED_VERSION, "protocol level %d" % level)
    c.version = level
    fl = buf[p + 1]
    if fl & 1:
        raise MQTTException(MALFORMED, "CONNECT reserved flag")  # [MQTT-3.1.2-3]
    c.clean = bool(fl & 2)
    has_will = fl & 4
    wqos = (fl >> 3) & 3
    wretain = bool(fl & 0x20)
    if not has_will and (wqos or wretain):
        raise MQTTException(MALFORMED, "will QoS/retain without will")  # [MQTT-3.1.2-11] [MQTT-3.1.2-13]
    if wqos == 3:
        raise MQTTException(MALFORMED, "will QoS 3")  # [MQTT-3.1.2-12]
    if fl & 0x40 and not fl & 0x80 and level == V311:
        raise MQTTException(MALFORMED, "password without user name")  # [MQTT-3.1.2-22]
    c.keepalive = get_u16(buf, p + 2, end)
    p += 4
    if level == V5:
        c.props, p = _props.decode(buf, p, end, CONNECT)
    c.client_id = _get_str(buf, p, end)
    p += 2 + _blen(buf, p)
    if has_will:
        wp = None
        if level == V5:
            wp, p = _props.decode(buf, p, end, _props.WILL)
        topic = get_bin(buf, p, end)
        check_topic(topic, 0, len(topic))
        p += 2 + len(topic)
        msg = get_bin(buf, p, end)
        p += 2 + len(msg)
        c.will = Will(topic, msg, wqos, wretain, wp)
    if fl & 0x80:
        c.user = _get_str(buf, p, end)
        p += 2 + _blen(buf, p)
    if fl & 0x40:
        c.password = get_bin(buf, p, end)
        p += 2 + len(c.password)
    if p != end:
        raise MQTTException(MALFORMED, "bytes after CONNECT payload")
    pkt.connect = c


def _blen(buf, p):
    return buf[p] << 8 | buf[p + 1]


def _get_str(buf, p, end):
    # A UTF-8 string field as str, validated first.
    n = get_u16(buf, p, end)
    need(p + 2, n, end)
    check_utf8(buf, p + 2, n)
    return bytes(buf[p + 2:p + 2 + n]).decode()


def _decode_connack(pkt, buf, p, end, version):
    need(p, 2, end)
    fl = buf[p]
    if fl & 0xFE:
        raise MQTTException(MALFORMED, "CONNACK reserved flags")  # [MQTT-3.2.2-1]
    pkt.session_present = bool(fl & 1)
    pkt.reason = buf[p + 1]
    pkt.props = None
    if version >= V5:
        pkt.props, p = _props.decode(buf, p + 2, end, CONNACK)
    else:
        p += 2
    if p != end:
        raise MQTTException(MALFORMED, "CONNACK length")


def _decode_subscribe(pkt, buf, p, end, version):
    pkt.pid = get_u16(buf, p, end)
    if not pkt.pid:
        raise MQTTException(PROTOCOL_ERROR, "packet identifier 0")  # [MQTT-2.3.1-1]
    p += 2
    pkt.props = None
    if version >= V5:
        pkt.props, p = _props.decode(buf, p, end, SUBSCRIBE)
    topics = []
    while p < end:
        n = get_u16(buf, p, end)
        need(p + 2, n + 1, end)
        check_filter(buf, p + 2, n)
        f = bytes(buf[p + 2:p + 2 + n])
        o = buf[p + 2 + n]
        p += 3 + n
        if version >= V5:
            if o & 0xC0:
                raise MQTTException(MALFORMED, "subscription options reserved bits")  # [MQTT-3.8.3-5]
            if (o >> 4) & 3 == 3:
                raise MQTTException(PROTOCOL_ERROR, "retain handling 3")
        elif o & 0xFC:
            raise MQTTException(MALFORMED, "requested QoS reserved bits")  # [MQTT-3-8.3-4]
        if o & 3 == 3:
            raise MQTTException(MALFORMED, "requested QoS 3")  # [MQTT-3-8.3-4]
        topics.append((f, o))
    if not topics:
        raise MQTTException(PROTOCOL_ERROR, "SUBSCRIBE without topic filters")  # [MQTT-3.8.3-3]
    pkt.topics = topics


def _decode_unsubscribe(pkt, buf, p, end, version):
    pkt.pid = get_u16(buf, p, end)
    if not pkt.pid:
        raise MQTTException(PROTOCOL_ERROR, "packet identifier 0")  # [MQTT-2.3.1-1]
    p += 2
    pkt.props = None
    if version >= V5:
        pkt.props, p = _props.decode(buf, p, end, UNSUBSCRIBE)
    topics = []
    while p < end:
        n = get_u16(buf, p, end)
        need(p + 2, n, end)
        check_filter(buf, p + 2, n)
        topics.append(bytes(buf[p + 2:p + 2 + n]))
        p += 2 + n
    if not topics:
        raise MQTTException(PROTOCOL_ERROR, "UNSUBSCRIBE without topic filters")  # [MQTT-3.10.3-2]
    pkt.topics = topics


# 5.0 Subscribe Reason Codes past 0x80 (3.9.3): anything else is malformed.
_SUBACK5 = b"\x83\x87\x8f\x91\x97\x9e\xa1\xa2"


def _decode_codes(pkt, buf, p, end, t, version):
    pkt.pid = get_u16(buf, p, end)
    p += 2
    pkt.props = None
    if version >= V5:
        pkt.props, p = _props.decode(buf, p, end, t)
    elif t == UNSUBACK and p != end:
        raise MQTTException(MALFORMED, "3.1.1 UNSUBACK with a payload")
    pkt.codes = bytes(buf[p:end])
    if t == SUBACK and not pkt.codes:
        raise MQTTException(PROTOCOL_ERROR, "SUBACK without return codes")
    if t == SUBACK:
        for c in pkt.codes:
            if c > 2 and c != 0x80 and (version < V5 or c not in _SUBACK5):
                raise MQTTException(MALFORMED, "SUBACK return code 0x%02x" % c)  # [MQTT-3.9.3-2]


def _decode_reason(pkt, buf, p, end, t, version):
    pkt.reason = 0
    pkt.props = None
    if p == end:
        return
    if version < V5:
        raise MQTTException(MALFORMED, "3.1.1 DISCONNECT with a body")
    pkt.reason = buf[p]
    if p + 1 < end:
        pkt.props, p = _props.decode(buf, p + 1, end, t)
        if p != end:
            raise MQTTException(MALFORMED, "bytes after properties")


# ---- convenience for code off the hot path ------------------------------------

def publish_props(pkt, buf):
    # The decoded property dict of a v5 PUBLISH held in pkt (allocates).
    if pkt.props_end <= pkt.props_off:
        return {}
    off = pkt.props_off
    # props_off points after the length prefix: decode from the prefix.
    n = pkt.props_end - off
    return _props.decode(buf, off - varint_size(n), pkt.props_end, PUBLISH)[0]
