"""MQTT 3.1.1 load generator for the broker benchmark (CPython, raw sockets).

Packets are built by hand once and written in large batches, and a
subscriber counts a run of equal-length PUBLISH packets by stride instead of
parsing each one, so the generator costs far less CPU than the brokers it
drives (`capacity()` checks that with no broker in between). Everything runs
in threads of one process: the work is in socket calls, which release the GIL.
"""

import socket
import struct
import threading
import time

PIDS = [struct.pack(">H", i) for i in range(65536)]
RECV = 1 << 20


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _str(s):
    return struct.pack(">H", len(s)) + s


def connect_pkt(cid, keepalive=0, clean=True):
    body = _str(b"MQTT") + bytes([4, 0x02 if clean else 0]) + struct.pack(">H", keepalive) + _str(cid)
    return b"\x10" + _varint(len(body)) + body


def subscribe_pkt(pid, topic, qos):
    body = PIDS[pid] + _str(topic) + bytes([qos])
    return b"\x82" + _varint(len(body)) + body


def publish_parts(topic, payload_len, qos):
    """(prefix, payload) of a PUBLISH: prefix + [pid] + payload is the packet."""
    rl = 2 + len(topic) + (2 if qos else 0) + payload_len
    return bytes([0x30 | (qos << 1)]) + _varint(rl) + _str(topic), b"x" * payload_len


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        d = sock.recv(n - len(buf))
        if not d:
            raise ConnectionError("closed by the broker")
        buf += d
    return buf


def connect(host, port, cid, timeout=10):
    """A connected MQTT session on a blocking TCP socket (TCP_NODELAY)."""
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(connect_pkt(cid.encode() if isinstance(cid, str) else cid))
    ack = _recv_exact(s, 4)
    if ack[0] != 0x20 or ack[3] != 0:
        s.close()
        raise ConnectionError("CONNACK %r" % ack)
    return s


def subscribe(s, topic, qos):
    s.sendall(subscribe_pkt(1, topic, qos))
    ack = _recv_exact(s, 5)
    if ack[0] != 0x90 or ack[4] != qos:
        raise ConnectionError("SUBACK %r" % ack)


def leave(s, timeout=1.0):
    """DISCONNECT, then read until the broker closes (no reset)."""
    try:
        s.sendall(b"\xe0\x00")
        s.shutdown(socket.SHUT_WR)
        s.settimeout(0.2)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if not s.recv(RECV):
                    break
            except socket.timeout:
                pass
    except OSError:
        pass
    s.close()


def close(s):
    try:
        s.sendall(b"\xe0\x00")
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


class Sub(threading.Thread):
    """Reads PUBLISH packets, acks QoS 1, counts them. With `latency`, records
    now - the perf_counter_ns stamped in each payload's first 8 bytes."""

    def __init__(self, sock, latency=False, watch=None):
        super().__init__(daemon=True)
        self.sock = sock
        self.latency = [] if latency else None
        self.watch = watch  # (topic bytes, list): payloads of that topic
        self.count = 0
        self.bytes = 0
        self.error = None
        self.stop = threading.Event()
        self.L = 0          # length of the packets seen so far (fast path)
        self.head = b""     # their first two bytes
        self.poff = 0       # pid offset in such a packet (QoS 1), else 0

    def run(self):
        sock = self.sock
        sock.settimeout(0.2)
        buf = bytearray(RECV)
        mv = memoryview(buf)
        rest = b""
        try:
            while not self.stop.is_set():
                try:
                    n = sock.recv_into(buf)
                except socket.timeout:
                    continue
                if not n:
                    if not self.stop.is_set():
                        self.error = "closed by the broker"
                    return
                self.bytes += n
                data = rest + mv[:n] if rest else mv[:n]
                rest = self._parse(bytes(data))
        except OSError as e:
            if not self.stop.is_set():
                self.error = str(e)

    def _parse(self, data):
        n = len(data)
        off = 0
        acks = []
        L = self.L
        if L and self.latency is None and self.watch is None:
            # Fast path: a run of packets identical in length and header.
            k = n // L
            if k and data[0:k * L:L] == self.head[:1] * k and data[1:k * L:L] == self.head[1:2] * k:
                self.count += k
                if self.poff:
                    p = self.poff
                    acks = [b"\x40\x02" + data[o:o + 2] for o in range(p, k * L, L)]
                    self.sock.sendall(b"".join(acks))
                return data[k * L:]
        while n - off >= 2:
            b0 = data[off]
            rl = 0
            mult = 1
            i = off + 1
            while True:
                if i >= n:
                    return self._flush(acks, data[off:])
                b = data[i]
                rl += (b & 0x7F) * mult
                mult <<= 7
                i += 1
                if not b & 0x80:
                    break
            end = i + rl
            if end > n:
                break
            if b0 >> 4 == 3:
                self.count += 1
                tl = data[i] << 8 | data[i + 1]
                qos = (b0 >> 1) & 3
                p = i + 2 + tl
                if qos:
                    acks.append((b"\x40\x02" if qos == 1 else b"\x50\x02") + data[p:p + 2])
                    p += 2
                if self.latency is not None:
                    self.latency.append(time.perf_counter_ns() - struct.unpack_from(">Q", data, p)[0])
                if self.watch is not None and data[i + 2:i + 2 + tl] == self.watch[0]:
                    self.watch[1].append((time.monotonic(), bytes(data[p:end])))
                if not self.L or self.L != end - off:
                    self.L = end - off
                    self.head = bytes(data[off:off + 2])
                    self.poff = (p - 2 - off) if qos == 1 else 0
            elif b0 >> 4 == 6:  # PUBREL (QoS 2 not used, answered anyway)
                acks.append(b"\x70\x02" + data[i:i + 2])
            off = end
        return self._flush(acks, data[off:])

    def _flush(self, acks, rest):
        if acks:
            self.sock.sendall(b"".join(acks))
        return rest


class Pub(threading.Thread):
    """Publishes to one topic as fast as the broker takes it (QoS 0: TCP
    back-pressure; QoS 1: at most `window` unacknowledged), or at `rate`
    messages per second with a perf_counter_ns stamp in each payload."""

    def __init__(self, sock, topic, size, qos, window=16, rate=0, gate=None):
        super().__init__(daemon=True)
        self.gate = gate
        self.sock = sock
        self.qos = qos
        self.window = window
        self.rate = rate
        self.prefix, self.payload = publish_parts(topic, size, qos)
        self.sent = 0
        self.acked = 0
        self.error = None
        self.stop = threading.Event()

    def run(self):
        self.sock.settimeout(0.2)
        try:
            if self.rate:
                self._paced()
            elif self.qos:
                self._qos1()
            else:
                self._qos0()
        except OSError as e:
            if not self.stop.is_set():
                self.error = str(e)

    def _send(self, data):
        mv = memoryview(data)
        off = 0
        while off < len(data):
            try:
                off += self.sock.send(mv[off:])
            except socket.timeout:
                if self.stop.is_set():
                    return False
        return True

    def _qos0(self):
        pkt = self.prefix + self.payload
        k = max(1, 65536 // len(pkt))
        if self.gate:  # batches well inside the window
            k = max(1, min(k, self.gate.window // (4 * len(self.gate.pubs))))
        batch = pkt * k
        while not self.stop.is_set():
            if self.gate:
                self.gate.wait(k)
            if not self._send(batch):
                return
            self.sent += k

    def _qos1(self):
        prefix, payload = self.prefix, self.payload
        pid = 0
        rest = b""
        while not self.stop.is_set():
            room = self.window - (self.sent - self.acked)
            if room > 0:
                if self.gate:
                    self.gate.wait(room)
                out = []
                for _ in range(room):
                    pid = pid % 65535 + 1
                    out.append(prefix + PIDS[pid] + payload)
                if not self._send(b"".join(out)):
                    return
                self.sent += room
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not d:
                raise OSError("closed by the broker")
            d = rest + d
            k = len(d) // 4
            if d[0:k * 4:4] != b"\x40" * k:
                raise OSError("expected PUBACKs, got %r" % d[:16])
            self.acked += k
            rest = d[k * 4:]

    def _paced(self):
        prefix, payload = self.prefix, self.payload[8:]
        period = 1.0 / self.rate
        t = time.perf_counter()
        pid = 0
        self.sock.setblocking(False)
        while not self.stop.is_set():
            now = time.perf_counter()
            if now < t:
                time.sleep(min(t - now, 0.05))
                continue
            t += period
            pid = pid % 65535 + 1
            pkt = prefix + (PIDS[pid] if self.qos else b"") + struct.pack(">Q", time.perf_counter_ns()) + payload
            self.sock.setblocking(True)
            self.sock.sendall(pkt)
            self.sock.setblocking(False)
            self.sent += 1
            try:  # drain PUBACKs without waiting
                while self.sock.recv(65536):
                    pass
            except (BlockingIOError, socket.timeout):
                pass


class Gate:
    """End-to-end flow control shared by the publishers of one load: a
    publisher waits while more than `window` messages are sent but not yet
    delivered to every subscriber, so a broker that reads faster than it
    delivers is measured at the rate it delivers, not by how much it can
    queue. A broker that drops messages would never close the gap: when
    deliveries stop for `stall` s with the window full, the missing messages
    are counted as lost and the publisher goes on."""

    def __init__(self, window, stall=0.01):
        self.window = window
        self.stall = stall
        self.lost = 0
        self.pubs = []
        self.subs = []

    def wait(self, k):
        last, t_last = -1, 0.0
        while True:
            got = min(s.count for s in self.subs)
            out = sum(p.sent for p in self.pubs) + k - self.lost - got
            if out <= self.window:
                return
            now = time.monotonic()
            if got != last:
                last, t_last = got, now
            elif now - t_last > self.stall:
                self.lost += out - self.window
                return
            time.sleep(0.0002)


def stop_all(threads, timeout=3):
    for t in threads:
        t.stop.set()
    for t in threads:
        t.join(timeout)


def throughput(host, port, tag, npub, nsub, qos, size, warm=0.5, measure=2.0, window=16,
               e2e_bytes=64 * 1024):
    """Delivered messages per second (all subscribers together) for npub
    publishers and nsub subscribers on one topic, measured over `measure`
    seconds after `warm`. Returns dict(rate, published, delivered, errors)."""
    topic = ("b/%s" % tag).encode()
    socks = []
    subs, pubs = [], []
    gate = Gate(max(window * npub, e2e_bytes // (size + len(topic) + 6))) if e2e_bytes else None
    try:
        for i in range(nsub):
            s = connect(host, port, "bs%s-%d" % (tag, i))
            socks.append(s)
            subscribe(s, topic, qos)
            subs.append(Sub(s))
        for i in range(npub):
            s = connect(host, port, "bp%s-%d" % (tag, i))
            socks.append(s)
            pubs.append(Pub(s, topic, size, qos, window=window, gate=gate))
        if gate:
            gate.pubs, gate.subs = pubs, subs
        for t in subs + pubs:
            t.start()
        time.sleep(warm)
        c0 = sum(s.count for s in subs)
        p0 = sum(p.sent for p in pubs)
        t0 = time.perf_counter()
        time.sleep(measure)
        c1 = sum(s.count for s in subs)
        p1 = sum(p.sent for p in pubs)
        dt = time.perf_counter() - t0
    finally:
        # Publishers first, then let the subscribers drain what the broker
        # still holds, then leave cleanly: a subscriber closing with unread
        # data resets the connection, which is not what this measures.
        stop_all(pubs)
        for p in pubs:
            leave(p.sock)
        last, end = -1, time.monotonic() + 5
        while time.monotonic() < end:
            c = sum(s.count for s in subs)
            if c == last:
                break
            last = c
            time.sleep(0.3)
        stop_all(subs)
        got, sent = sum(s.count for s in subs), sum(p.sent for p in pubs)
        for s in subs:
            leave(s.sock)
        for s in socks:
            s.close()
    errors = [t.error for t in pubs + subs if t.error]
    # Share of the messages sent that some subscriber never got (after the
    # drain above): the broker dropped them.
    drop = 1.0 - got / float(sent * nsub) if sent else 0.0
    return dict(rate=(c1 - c0) / dt, published=(p1 - p0) / dt, delivered=c1 - c0, errors=errors,
                drop=max(0.0, drop))


def latency(host, port, tag, rate=500, seconds=3.0, qos=0, size=64):
    """Publish-to-delivery latencies in microseconds, 1 -> 1 at a fixed rate
    (the first 10% dropped as warm-up). Returns (sorted list, errors)."""
    topic = ("l/%s" % tag).encode()
    ss = connect(host, port, "ls" + tag)
    sp = connect(host, port, "lp" + tag)
    subscribe(ss, topic, qos)
    sub = Sub(ss, latency=True)
    pub = Pub(sp, topic, max(size, 8), qos, rate=rate)
    sub.start()
    pub.start()
    try:
        time.sleep(seconds)
    finally:
        pub.stop.set()
        pub.join(3)
        time.sleep(0.2)
        stop_all([sub])
        leave(sp)
        leave(ss)
    lat = sub.latency[len(sub.latency) // 10:]
    errors = [t.error for t in (pub, sub) if t.error]
    if len(sub.latency) < pub.sent * 0.9:
        errors.append("only %d of %d delivered" % (len(sub.latency), pub.sent))
    return sorted(x / 1000.0 for x in lat), errors


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(len(sorted_vals) * p / 100.0))]


def capacity(qos, size, npub=1, seconds=1.0, window=16):
    """The generator with no broker: Pub -> loopback TCP -> Sub (which acks
    QoS 1 itself). Messages per second it can push and count."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    port = ls.getsockname()[1]
    pubs, subs, socks = [], [], []
    try:
        for i in range(npub):
            a = socket.create_connection(("127.0.0.1", port))
            b, _ = ls.accept()
            for s in (a, b):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks += [a, b]
            pubs.append(Pub(a, b"b/cap", size, qos, window=window))
            subs.append(Sub(b))
        for t in subs + pubs:
            t.start()
        time.sleep(0.3)
        c0 = sum(s.count for s in subs)
        t0 = time.perf_counter()
        time.sleep(seconds)
        c1 = sum(s.count for s in subs)
        dt = time.perf_counter() - t0
    finally:
        stop_all(pubs + subs)
        for s in socks:
            s.close()
        ls.close()
    return (c1 - c0) / dt
