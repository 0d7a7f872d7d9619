# MQTTClient: a drop-in for micropython-lib's umqtt.simple (and, with
# reconnect=True, umqtt.robust) speaking MQTT 3.1.1 or 5.0 on one receive and
# one send buffer allocated here. Every packet goes out in one write; a QoS 0
# publish and a zero-copy receive allocate nothing.
#
# Policies (documented choices):
# - Incoming packet larger than the receive buffer: v5 never sees one (we send
#   Maximum Packet Size = rx_size; one anyway is a protocol error, 0x95). 3.1.1:
#   the packet is drained through the receive buffer without allocating, a
#   QoS 1/2 one is acknowledged so the broker does not resend it forever, it is
#   counted in .dropped and not delivered.
# - Link down with reconnect on: publish() queues into the offline ring (see
#   ring.py for the full policy) and returns; a QoS 1/2 flow broken by the link
#   stays in the session and is resent with DUP after the reconnect.
# - No call blocks forever: waiting is a poll that wakes every second (a quarter
#   of a short keepalive) to run keepalive; a packet's remaining bytes and every
#   ack wait are bounded by `timeout` seconds, after which the link is dead.
#   wait_msg() without a timeout waits for a packet like umqtt.simple (with a
#   keepalive set, a silent broker ends it with OSError(ETIMEDOUT)).
# - Exactly-once QoS 2 receive: the packet id is remembered from PUBLISH to
#   PUBREL (rx_qos2 slots, kept across reconnects while the server keeps the
#   session); a redelivered PUBLISH is acknowledged, not delivered again.
#   For 3.1.1 rx_qos2 must cover the broker's in-flight limit (mosquitto: 20).
#
# Keywords beyond umqtt.simple's: version (4 or 5), session_expiry (s, v5),
# rx_size/tx_size (the two buffers), inflight (QoS 1/2 window), rx_qos2, timeout
# (s), reconnect/backoff_min/backoff_max/reconnect_tries (robust mode),
# offline_buffer/offline_policy (ring bytes; ring.DROP_OLDEST/DROP_NEW/ERROR),
# topic_alias_out/topic_alias_in/alias_topic_max (v5 alias tables),
# connect_props (extra v5 CONNECT properties).
from .core import Core, micropython, q0_pack  # first: compiles while the heap is still unfragmented
import time
from random import getrandbits
from .errors import MQTTException, PROTOCOL_ERROR, QOS_UNSUPPORTED, RETAIN_UNSUPPORTED
from .codec import (Will, decode, encode_publish, encode_ack, encode_ping, encode_connect,
                    encode_subscribe, encode_unsubscribe, encode_disconnect, encode_auth,
                    publish_props, NO_LOCAL, RETAIN_AS_PUBLISHED, RETAIN_HANDLING_SHIFT)
from . import props as P
from .session import WAIT_COMP

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_CONNACK = const(2)
_PUBLISH = const(3)
_PUBREL = const(6)
_AUTH = const(15)
_ETIMEDOUT = const(110)
_ENOTCONN = const(107)

ticks_ms = time.ticks_ms
ticks_diff = time.ticks_diff


class MQTTClient(Core):
    def set_callback(self, f, props=False, zero_copy=False):
        self.cb = f
        self._cb_mode = 2 if zero_copy else (1 if props else 0)
        if zero_copy and self._msg is None:
            from .message import Message
            self._msg = Message(self)

    def set_last_will(self, topic, msg, retain=False, qos=0, props=None):
        if not 0 <= qos <= 2 or not topic:
            raise ValueError("will")
        self.lw_topic = topic
        self.lw_msg = msg
        self.lw_qos = qos
        self.lw_retain = retain
        self.lw_props = props

    def set_auth(self, method, data=None, handler=None):
        # v5 enhanced authentication: handler(method, data) -> reply data for each
        # AUTH (continue) from the server; also used by reauthenticate().
        self._auth_method = method
        self._auth_data = data
        self._auth_cb = handler

    def connect(self, clean_session=True, timeout=None):
        self._clean = clean_session
        sp = self._connect(clean_session, timeout)
        self._user_down = False
        self._attempt = 0
        return sp

    def disconnect(self, reason=0, props=None):
        self._user_down = True
        if self.sock is not None:
            try:
                self._send(encode_disconnect(self._tx, reason, self.version, props))
            except OSError:
                pass
        self._close()

    def ping(self):
        self._online()
        self._send(encode_ping(self._tx))
        if not self._ping_out:
            self._ping_out = True
            self._ping_t = ticks_ms()

    @micropython.native
    def publish(self, topic, msg, retain=False, qos=0, props=None, wait=True):
        # Returns when the QoS 1/2 flow completes (umqtt semantics); with
        # wait=False returns the packet id once sent (pipelined: up to the
        # in-flight window, bounded by the server's Receive Maximum, outstanding).
        if isinstance(topic, str):
            topic = topic.encode()
        if isinstance(msg, str):
            msg = msg.encode()
        pv = self._q0
        if not qos and pv >= 0 and props is None:
            # QoS 0 fast path (no alias, no properties): the packet is built
            # in place here, one call fewer per layer than _enc_pub + _send.
            s = self._t.sock
            tx = self._tx
            tn = len(topic)
            mn = len(msg)
            rl = 2 + tn + pv + mn
            if s is not None and tn and rl < 16384 and rl + 3 <= len(tx):
                n = q0_pack(tx, 0x31 if retain else 0x30, topic, tn, pv, msg, mn)
                try:
                    k = s.write(tx, n)
                except OSError:
                    k = 0  # finish() retries a timeout and raises a dead link
                try:
                    if k != n:
                        self._t.finish(tx, k, n)
                except OSError as e:
                    if not self.robust:
                        raise e
                    self._down(e)
                    return self._queue(topic, msg, retain, qos, props, wait)
                self._last_tx = ticks_ms()
                return None
        if qos > self._max_qos:
            raise MQTTException(QOS_UNSUPPORTED, "server maximum QoS %d" % self._max_qos)
        if retain and not self._retain_ok:
            raise MQTTException(RETAIN_UNSUPPORTED)
        if self.sock is None and not self._revive():
            return self._queue(topic, msg, retain, qos, props, wait)
        pid = 0
        try:
            if not qos:
                self._send(self._enc_pub(topic, msg, 0, retain, 0, False, props, True))
                return None
            self._make_room()
            s = self._s
            p = s.new_pid()
            n = self._enc_pub(topic, msg, qos, retain, p, False, props, True)
            s.add(p, topic, msg, qos, retain, props)
            pid = p
            self._send(n)
        except OSError as e:
            if not self.robust:
                raise e
            self._down(e)
            if not pid:
                return self._queue(topic, msg, retain, qos, props, wait)
            # In the session: resent after the reconnect.
        if wait:
            self._wait_flow(pid)
            return None
        return pid

    def subscribe(self, topic, qos=0, no_local=False, retain_as_published=False,
                  retain_handling=0, props=None):
        # Returns the granted QoS; a refusal raises MQTTException(code).
        topic, o = self._prepare_sub(topic, qos, no_local, retain_as_published,
                                     retain_handling, props)
        if self.sock is None and self.robust:
            return qos  # restored on reconnect
        return self._robustly(self._subscribe, topic, o, props)

    def unsubscribe(self, topic, props=None):
        if isinstance(topic, str):
            topic = topic.encode()
        self._subs = [s for s in self._subs if s[0] != topic]
        if self.sock is None and self.robust:
            return
        return self._robustly(self._unsubscribe, topic, props)

    @micropython.native
    def wait_msg(self, timeout=None):
        # Wait for one packet from the server and process it (umqtt semantics).
        # Keepalive runs while waiting. timeout (s): give up and return None.
        # Returns the packet type handled (None on timeout).
        t = self._q0rx()
        if t:
            return t
        dl = None if timeout is None else ticks_ms() + int(timeout * 1000)
        while True:
            if self.sock is None:
                if not self.robust or self._user_down:
                    raise OSError(_ENOTCONN)
                self._revive(True, dl)
                if self.sock is None:
                    return None
            try:
                t = self._step()
            except OSError as e:
                if not self.robust:
                    raise e
                self._down(e)
                continue
            except MQTTException as e:
                if not self.robust or self._user_down:
                    raise e
                self._down(e)
                continue
            if t:
                return t
            if dl is not None and ticks_diff(dl, ticks_ms()) <= 0:
                return None

    def check_msg(self):
        # Non-blocking: process one packet if one is waiting, run keepalive,
        # reconnect when due (robust). Returns the packet type or None.
        if self.sock is None:
            if not self.robust:
                raise OSError(_ENOTCONN)
            if not self._revive(False):
                return None
        try:
            t = self._recv(0)
            if t:
                self._handle(t)
            self._keepalive()
            return t or None
        except (OSError, MQTTException) as e:
            if not self.robust or self._user_down:
                raise
            self._down(e)
            return None

    # ---- added API -------------------------------------------------------------

    def flush(self, timeout=None):
        # Wait until every pipelined QoS 1/2 publish is acknowledged.
        dl = ticks_ms() + int((timeout or self.timeout) * 1000)
        while self._s.count:
            if ticks_diff(dl, ticks_ms()) <= 0:
                raise OSError(_ETIMEDOUT)
            if self.sock is None:
                if not self.robust:
                    raise OSError(_ENOTCONN)
                self._revive(True, dl)
                continue
            try:
                self._pump(dl)
            except OSError as e:
                if not self.robust:
                    raise
                self._down(e)

    def inflight(self):
        return self._s.count

    def queued(self):
        return self._ring.count if self._ring else 0

    def is_connected(self):
        return self.sock is not None

    def reconnect(self):
        # One attempt (umqtt.robust names it too); True when connected.
        self._close()
        try:
            self._connect(self._reconnect_clean(), None)
        except (OSError, MQTTException) as e:
            self.log(True, e)
            return False
        self._attempt = 0
        return True

    def delay(self, i):
        time.sleep(self.DELAY)

    def log(self, in_reconnect, e):
        if self.DEBUG:
            print("mqtt reconnect:" if in_reconnect else "mqtt:", repr(e))

    def reauthenticate(self, data=None):
        self._online()
        self._send(encode_auth(self._tx, 0x19, {P.AUTH_METHOD: self._auth_method,
                                                P.AUTH_DATA: data or b""}))

    def request(self, topic, msg, timeout=None, qos=1, props=None):
        # v5 request/response: publish with a Response Topic and Correlation Data,
        # wait for the matching response; returns (payload, props).
        if self.version < 5:
            raise MQTTException(PROTOCOL_ERROR, "request/response needs MQTT 5")
        if self._rr_topic is None:
            base = self.response_info or "umqtt_full/resp"
            cid = self.client_id
            if not isinstance(cid, str):
                cid = cid.decode()
            rt = ("%s/%s" % (base, cid)).encode()
            self.subscribe(rt, 1)
            self._rr_topic = rt
        self._rr_n += 1
        corr = b"%d" % self._rr_n
        self._rr_corr = corr
        self._rr_resp = None
        p = dict(props) if props else {}
        p[P.RESPONSE_TOPIC] = self._rr_topic
        p[P.CORRELATION_DATA] = corr
        self.publish(topic, msg, qos=qos, props=p)
        dl = ticks_ms() + int((timeout or self.timeout) * 1000)
        while self._rr_resp is None:
            if ticks_diff(dl, ticks_ms()) <= 0:
                self._rr_corr = None
                raise OSError(_ETIMEDOUT)
            self.wait_msg(0.2)
        r = self._rr_resp
        self._rr_resp = None
        self._rr_corr = None
        return r

    def respond(self, req_props, msg, qos=0, props=None):
        # Answer a request received with props (set_callback(cb, props=True)).
        rt = req_props.get(P.RESPONSE_TOPIC)
        if rt is None:
            raise ValueError("no response topic")
        p = dict(props) if props else {}
        if P.CORRELATION_DATA in req_props:
            p[P.CORRELATION_DATA] = req_props[P.CORRELATION_DATA]
        self.publish(rt, msg, qos=qos, props=p)

    # ---- connection --------------------------------------------------------------

    def _reconnect_clean(self):
        # A reconnect resumes the session when there is one to resume.
        if self.version >= 5:
            return self._clean and not self.session_expiry
        return self._clean

    def _connect(self, clean, timeout):
        self._close()
        tmo = timeout or self.timeout
        self.sock = self._t.open(self.server, self.port, self.ssl, self.ssl_params, tmo)
        try:
            return self._handshake(clean, tmo)
        except Exception:
            self._close()
            raise

    def _handshake(self, clean, tmo):
        v = self.version
        will = None
        if self.lw_topic:
            will = Will(self.lw_topic, self.lw_msg, self.lw_qos, self.lw_retain, self.lw_props)
        props = None
        if v >= 5:
            props = dict(self.connect_props) if self.connect_props else {}
            if self.session_expiry:
                props[P.SESSION_EXPIRY] = self.session_expiry
            props[P.RECEIVE_MAXIMUM] = self._s.rx_max
            props[P.MAXIMUM_PACKET_SIZE] = len(self._rx)
            if self._ain_n:
                props[P.TOPIC_ALIAS_MAXIMUM] = self._ain_n
            if self._auth_method:
                props[P.AUTH_METHOD] = self._auth_method
                if self._auth_data is not None:
                    props[P.AUTH_DATA] = self._auth_data
        self._send(encode_connect(self._tx, self.client_id, clean, self.keepalive, self.user,
                                  self.pswd, will, v, props))
        pkt = self._pkt
        dl = ticks_ms() + int(tmo * 1000)
        while True:
            t = self._recv(self._tick)
            if not t:
                if ticks_diff(dl, ticks_ms()) <= 0:
                    raise OSError(_ETIMEDOUT)
                continue
            if t == _AUTH:
                self._on_auth()
                continue
            if t != _CONNACK:
                raise MQTTException(PROTOCOL_ERROR, "expected CONNACK")
            break
        if pkt.reason:
            raise MQTTException(pkt.reason)
        sp = pkt.session_present
        cp = pkt.props or {}
        self.connack_props = cp
        self._srv_rmax = cp.get(P.RECEIVE_MAXIMUM, 65535)
        self._srv_maxpkt = cp.get(P.MAXIMUM_PACKET_SIZE, 0)
        self._max_qos = cp.get(P.MAXIMUM_QOS, 2)
        self._retain_ok = cp.get(P.RETAIN_AVAILABLE, 1) == 1
        self._aout_max = min(cp.get(P.TOPIC_ALIAS_MAXIMUM, 0), self._aout_n, 255)
        # publish()'s QoS 0 fast path: only when no alias or size limit applies.
        mp = self._srv_maxpkt
        self._q0 = -1 if self._aout_max or not self._retain_ok or (mp and mp < len(self._tx)) \
            else (1 if v >= 5 else 0)
        for i in range(self._aout_n):
            self._aout_tl[i] = 0
        for i in range(self._ain_n):
            self._ain_tl[i] = 0
        if P.ASSIGNED_CLIENT_ID in cp:
            self.client_id = cp[P.ASSIGNED_CLIENT_ID]
        if P.SERVER_KEEPALIVE in cp:
            self.keepalive = cp[P.SERVER_KEEPALIVE]
        if P.RESPONSE_INFO in cp:
            self.response_info = cp[P.RESPONSE_INFO]
        ka = self.keepalive
        self._ka_ms = ka * 1000
        # Wake often enough to ping at half the keepalive.
        self._tick = 1000 if not ka or ka >= 4 else ka * 250
        now = ticks_ms()
        self._last_rx = self._last_tx = now
        self._ping_out = False
        if not sp:
            self._s.clear_rx()  # the server forgot its half of every QoS 2 flow
        self._resume(sp)
        return 1 if sp else 0

    def _resume(self, sp):
        # After CONNACK: resend what is in flight, restore subscriptions the
        # server no longer has, then send what was queued offline.
        s = self._s
        if not sp and self._subs:
            # First, so messages resent below reach this client's own subscriptions too.
            for t, o, p in self._subs:
                self._subscribe(t, o, p)
        for i in s.pending():
            pid = s.pid[i]
            f = s.flags[i]
            if s.state[i] == WAIT_COMP:
                if sp:
                    self._send(encode_ack(self._tx, _PUBREL, pid, 0, self.version))
                else:
                    s.free(i)  # the server had it: a new session has nothing to release
                continue
            self._send(self._enc_pub(s.topic[i], s.msg[i], f & 3, (f & 4) != 0, pid, bool(sp),
                                     s.props[i], False))
        r = self._ring
        if r is not None:
            pkt = self._pkt
            while r.count:
                # tx as scratch: rx may hold packets that came after CONNACK.
                tx = self._tx
                n = r.get(tx)
                if not n:
                    continue
                decode(pkt, tx, 0, n, self.version)
                tp = bytes(self._txm[pkt.topic_off:pkt.topic_off + pkt.topic_len])
                msg = bytes(self._txm[pkt.payload_off:pkt.payload_off + pkt.payload_len])
                pp = publish_props(pkt, tx) if self.version >= 5 else None
                qos = pkt.qos
                ret = pkt.retain
                if qos:
                    self._make_room()
                    pid = s.new_pid()
                    s.add(pid, tp, msg, qos, ret, pp or None)
                    self._send(self._enc_pub(tp, msg, qos, ret, pid, False, pp or None, True))
                else:
                    self._send(self._enc_pub(tp, msg, 0, ret, 0, False, pp or None, True))

    def _down(self, e):
        # The link failed: close it and schedule a reconnect (robust mode).
        self.log(False, e)
        self._close()
        self._schedule()

    def _schedule(self):
        # Exponential backoff with jitter: min * 2^attempt, capped, times 0.5..1.
        d = self.backoff_min * (1 << min(self._attempt, 16))
        if d > self.backoff_max:
            d = self.backoff_max
        d = d * (512 + getrandbits(9)) / 1024
        self._next_try = ticks_ms() + int(d * 1000)
        self._attempt += 1

    def _revive(self, block=False, dl=None):
        # Reconnect when robust and due; block=True sleeps until the next try
        # (until dl, a ticks_ms deadline, when given). True when connected.
        if not self.robust or self._user_down:
            return self.sock is not None
        while self.sock is None:
            if self.reconnect_tries and self._attempt > self.reconnect_tries:
                raise OSError(_ENOTCONN)
            w = ticks_diff(self._next_try, ticks_ms())
            if w > 0:
                if not block:
                    return False
                if dl is not None:
                    r = ticks_diff(dl, ticks_ms())
                    if r <= 0:
                        return False
                    if w > r:
                        w = r
                time.sleep_ms(w)
                continue
            try:
                self._connect(self._reconnect_clean(), None)
                self._attempt = 0
            except (OSError, MQTTException) as e:
                self.log(True, e)
                self._close()
                self._schedule()
                if not block:
                    return False
        return True

    def _robustly(self, fn, *args):
        while True:
            if self.sock is None:
                if not self.robust:
                    raise OSError(_ENOTCONN)
                self._revive(True)
            try:
                return fn(*args)
            except OSError as e:
                if not self.robust:
                    raise
                self._down(e)

    def _prepare_sub(self, topic, qos, no_local, retain_as_published, retain_handling, props):
        # Topic as bytes and the options byte (v5 bits only for v5), recorded
        # so a reconnect into a fresh session can restore the subscription.
        if isinstance(topic, str):
            topic = topic.encode()
        o = qos
        if self.version >= 5:
            o |= (NO_LOCAL if no_local else 0) | (RETAIN_AS_PUBLISHED if retain_as_published else 0)
            o |= retain_handling << RETAIN_HANDLING_SHIFT
        self._remember(topic, o, props)
        return topic, o

    def _remember(self, topic, o, props):
        for i in range(len(self._subs)):
            if self._subs[i][0] == topic:
                self._subs[i] = (topic, o, props)
                return
        self._subs.append((topic, o, props))

    def _subscribe(self, topic, o, props):
        s = self._s
        pid = s.new_pid()
        s.reserved = pid
        self._send(encode_subscribe(self._tx, pid, [(topic, o)], self.version, props))
        self._wait_t = 9  # SUBACK
        c = self._wait_ack(pid)
        g = c[0]
        if g >= 0x80:
            raise MQTTException(g)
        return g

    def _unsubscribe(self, topic, props):
        s = self._s
        pid = s.new_pid()
        s.reserved = pid
        self._send(encode_unsubscribe(self._tx, pid, [topic], self.version, props))
        self._wait_t = 11  # UNSUBACK
        c = self._wait_ack(pid)
        if c and c[0] >= 0x80:
            raise MQTTException(c[0])

    def _wait_ack(self, pid):
        self._wait_pid = pid
        self._codes = None
        dl = ticks_ms() + int(self.timeout * 1000)
        try:
            while self._wait_pid:
                self._pump(dl)
        finally:
            self._wait_pid = 0
            self._s.reserved = 0
        return self._codes

    def _wait_flow(self, pid):
        # Block until the QoS 1/2 flow of pid completes; robust mode rides
        # over reconnects (the message is resent from the session) for up to
        # timeout seconds of being offline, then leaves it in flight.
        s = self._s
        dl = ticks_ms() + int(self.timeout * 1000)
        while s.find(pid) >= 0:
            if self.sock is None:
                if not self.robust or ticks_diff(dl, ticks_ms()) <= 0:
                    return
                self._revive(True, dl)
                continue
            try:
                self._pump(dl)
            except OSError as e:
                if not self.robust:
                    raise
                self._down(e)
                dl = ticks_ms() + int(self.timeout * 1000)
        if self._done_pid == pid and self._done_rc >= 0x80:
            raise MQTTException(self._done_rc)

    def _queue(self, topic, msg, retain, qos, props, wait):
        # Offline: encode the PUBLISH into the ring (packet id assigned on send).
        # Without a ring, robust mode waits for the link like umqtt.robust.
        r = self._ring
        if r is None:
            if not self.robust or self._user_down:
                raise OSError(_ENOTCONN)
            self._revive(True)
            return self.publish(topic, msg, retain, qos, props, wait)
        n = encode_publish(self._tx, topic, msg, qos, retain, False, 1 if qos else 0,
                           self.version, props, 0)
        r.put(self._txm, n)
        return None

    # ---- packets in -------------------------------------------------------------
