# Shared pieces for the broker tests (no tests here): start the broker on the
# MicroPython Unix port with a 128 KB heap on a free port, raw MQTT packets
# built by hand (struct, not our codec), paho-mqtt peers.
import json
import os
import socket
import struct
import subprocess
import threading
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MPY = os.path.join(ROOT, ".venv", "bin", "micropython")
LIB = os.path.join(ROOT, "firmware", "lib")

# The heap a broker test gets: 128K word-adjusted ("w": 256 KB on this 64-bit
# host), which holds what a 128 KB heap holds on a 32-bit board. The broker's
# compiled source with every optional hook no longer fits 128 KB of 64-bit
# objects (measured: ~81 KB of code + ~37 KB of tables); on a board its
# bytecode is half that, or in flash when frozen.
HEAP = os.environ.get("BROKER_HEAP", "128wK")

# The broker's defaults (sized for a 128 KB heap, see docs/broker.md), with
# debug logging so a failing test shows what the broker did.
BASE = {"log_level": "debug"}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Broker:
    def __init__(self, tmp, cfg, heap=HEAP, name="broker"):
        self.port = free_port()
        self.cfg_path = os.path.join(str(tmp), name + ".json")
        with open(self.cfg_path, "w") as f:
            json.dump(cfg, f)
        self.log_path = os.path.join(str(tmp), name + ".log")
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, MICROPYPATH=LIB)
        self.proc = subprocess.Popen(
            [MPY, "-X", "heapsize=" + heap, "-m", "umqtt_full.broker", "--host", "127.0.0.1",
             "--port", str(self.port), "--config", self.cfg_path],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=ROOT, start_new_session=True)
        end = time.time() + 15
        while "listening on" not in self.log():
            if self.proc.poll() is not None or time.time() > end:
                self.stop()
                raise AssertionError("broker did not start:\n" + self.log())
            time.sleep(0.05)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def check_clean(self):
        """Alive, and no error logged since the last call (fuzz rounds)."""
        assert self.alive(), "broker died:\n" + self.log()[-3000:]
        log = self.log()
        new = log[getattr(self, "logpos", 0):]
        self.logpos = len(log)
        for bad in ("ERROR", "Traceback", "MemoryError", "internal error"):
            assert bad not in new, new[-3000:]

    def wait_log(self, text, timeout=5):
        end = time.time() + timeout
        while time.time() < end:
            if text in self.log():
                return True
            time.sleep(0.05)
        raise AssertionError("%r not in broker log:\n%s" % (text, self.log()[-3000:]))

    def stop(self):
        self.stopped = True  # on purpose: not a crash
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


@pytest.fixture
def broker_factory(tmp_path):
    made = []

    def make(extra=None, heap=HEAP, **kw):
        cfg = dict(BASE)
        cfg.update(extra or {})
        cfg.update(kw)
        b = Broker(tmp_path, cfg, heap, "broker%d" % len(made))
        made.append(b)
        return b

    yield make
    for b in made:
        ok = b.alive() or getattr(b, "stopped", False)
        b.stop()
        print("--- broker log ---\n" + b.log()[-6000:])
        assert ok, "broker died:\n" + b.log()[-3000:]


# ---- raw packets, by hand ------------------------------------------------------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s16(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">H", len(b)) + b


def pkt(first, body):
    return bytes([first]) + varint(len(body)) + body


def props(*items):
    # items: raw property bytes (id + value) already encoded
    b = b"".join(items)
    return varint(len(b)) + b


def connect(cid, v=4, clean=True, keepalive=60, user=None, password=None, will=None,
            cprops=b"", will_props=b""):
    flags = 0x02 if clean else 0
    pay = s16(cid)
    if will:
        topic, msg, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        if v == 5:
            pay += props(will_props)
        pay += s16(topic) + s16(msg)
    if user is not None:
        flags |= 0x80
        pay += s16(user)
    if password is not None:
        flags |= 0x40
        pay += s16(password)
    var = s16(b"MQTT") + bytes([v, flags]) + struct.pack(">H", keepalive)
    if v == 5:
        var += props(cprops)
    return pkt(0x10, var + pay)


def subscribe(pid, filters, v=4, sprops=b""):
    body = struct.pack(">H", pid) + (props(sprops) if v == 5 else b"")
    for f, o in filters:
        body += s16(f) + bytes([o])
    return pkt(0x82, body)


def unsubscribe(pid, filters, v=4):
    body = struct.pack(">H", pid) + (b"\x00" if v == 5 else b"")
    for f in filters:
        body += s16(f)
    return pkt(0xA2, body)


def publish(topic, payload, qos=0, pid=0, retain=False, v=4, pprops=b"", dup=False):
    body = s16(topic)
    if qos:
        body += struct.pack(">H", pid)
    if v == 5:
        body += props(pprops)
    return pkt(0x30 | (8 if dup else 0) | (qos << 1) | (1 if retain else 0), body + payload)


def ack(t, pid, reason=None):
    first = {4: 0x40, 5: 0x50, 6: 0x62, 7: 0x70}[t]
    body = struct.pack(">H", pid) + (bytes([reason]) if reason is not None else b"")
    return pkt(first, body)


class Raw:
    """A hand-driven MQTT connection: send bytes, read whole packets."""

    def __init__(self, port, timeout=5):
        self.s = socket.create_connection(("127.0.0.1", port), timeout)
        self.s.settimeout(timeout)
        self.buf = b""

    def send(self, b):
        self.s.sendall(b)

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def read(self, timeout=5):
        """One packet as (first byte, body bytes)."""
        self.s.settimeout(timeout)
        while True:
            if len(self.buf) >= 2:
                n = 0
                shift = 0
                i = 1
                while i < len(self.buf):
                    b = self.buf[i]
                    n |= (b & 0x7F) << shift
                    shift += 7
                    i += 1
                    if not b & 0x80:
                        break
                else:
                    i = -1
                if i > 0 and len(self.buf) >= i + n:
                    first, body = self.buf[0], self.buf[i:i + n]
                    self.buf = self.buf[i + n:]
                    return first, body
            self._fill()

    def closed(self, timeout=5):
        """True when the broker closes the connection within timeout (any
        packets before the close are skipped)."""
        end = time.time() + timeout
        try:
            while time.time() < end:
                self.s.settimeout(max(0.05, end - time.time()))
                d = self.s.recv(65536)
                if not d:
                    return True
                self.buf += d
        except socket.timeout:
            return False
        except OSError:
            return True
        return False

    def nothing(self, wait=0.5):
        self.s.settimeout(wait)
        try:
            d = self.s.recv(65536)
        except socket.timeout:
            return True
        self.buf += d
        return False

    def connect(self, cid, v=4, expect=0, **kw):
        self.send(connect(cid, v, **kw))
        first, body = self.read()
        assert first == 0x20, (first, body)
        assert body[1] == expect, "CONNACK %r" % body
        return body

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def publish_fields(body, qos, v=4):
    """(topic, pid, props bytes, payload) of a PUBLISH body."""
    n = struct.unpack(">H", body[:2])[0]
    topic = body[2:2 + n]
    p = 2 + n
    pid = 0
    if qos:
        pid = struct.unpack(">H", body[p:p + 2])[0]
        p += 2
    pr = b""
    if v == 5:
        ln = 0
        shift = 0
        while True:
            b = body[p]
            p += 1
            ln |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        pr = body[p:p + ln]
        p += ln
    return topic, pid, pr, body[p:]


# ---- paho ---------------------------------------------------------------------

class Paho:
    """paho-mqtt 2.x client on its loop thread, recording messages."""

    def __init__(self, port, client_id="", version=4, clean=True, keepalive=30, username=None,
                 password=None, will=None, cprops=None, connect=True):
        import paho.mqtt.client as mqtt
        self.mqtt = mqtt
        self.v5 = version == 5
        proto = mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto,
                             clean_session=None if self.v5 else clean)
        self.msgs = []
        self.cond = threading.Condition()
        self.connected = threading.Event()
        self.rc = None
        self.props = None
        self.disc = None
        self.subacks = []
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect
        self.c.on_subscribe = self._on_subscribe
        if username is not None:
            self.c.username_pw_set(username, password)
        if will:
            self.c.will_set(**will)
        kw = {}
        if self.v5:
            kw["clean_start"] = clean
            if cprops is not None:
                kw["properties"] = cprops
        self.c.connect("127.0.0.1", port, keepalive, **kw)
        self.c.loop_start()
        if connect:
            assert self.connected.wait(10), "paho could not connect"
            assert not self.rc.is_failure, "CONNACK %s" % self.rc

    def _on_connect(self, client, userdata, flags, rc, properties):
        self.rc = rc
        self.flags = flags
        self.props = properties
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, rc, properties):
        self.disc = rc
        self.connected.clear()

    def _on_subscribe(self, client, userdata, mid, rcs, properties):
        with self.cond:
            self.subacks.append([int(getattr(r, "value", r)) for r in rcs])
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.msgs.append(msg)
            self.cond.notify_all()

    def sub(self, topic, qos=0, timeout=5, **kw):
        n = len(self.subacks)
        self.c.subscribe(topic, qos, **kw)
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.subacks) > n, timeout), "no SUBACK"
            return self.subacks[-1]

    def pub(self, topic, payload=b"", qos=0, retain=False, properties=None):
        info = self.c.publish(topic, payload, qos, retain, properties)
        info.wait_for_publish(5)
        return info

    def wait(self, n=1, timeout=5):
        with self.cond:
            self.cond.wait_for(lambda: len(self.msgs) >= n, timeout)
            return list(self.msgs)

    def clear(self):
        with self.cond:
            self.msgs.clear()

    def stop(self, clean=True):
        if clean:
            try:
                self.c.disconnect()
            except Exception:
                pass
        self.c.loop_stop()
        if not clean:
            self.c.socket().close() if self.c.socket() else None
