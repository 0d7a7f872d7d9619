"""The fuzzing of test_broker_fuzz.py, over MQTT over WebSocket: valid,
certainly invalid, mutated and random MQTT bytes cut into masked binary
frames of random sizes (with continuation frames), and broken frames (no
mask, reserved bits, unknown opcodes, control frames too long or
fragmented). After each example the connection must be over or answering,
the broker alive with no error in its log, and a fresh WebSocket client and
a TCP client must both get a message through. The heap (after
gc.collect(), from $SYS) must not grow over the run."""

import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_packets as F
from test_broker_helpers import Broker, Paho, Raw, connect, publish, subscribe
from test_ws import WS, WWW, frame, free_port

SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


class WSFuzz:
    def __init__(self, tmp):
        self.ws_port = free_port()
        self.b = Broker(tmp, {"log_level": "info", "sys_interval": 1, "session_expiry_max": 1,
                              "ws_port": self.ws_port, "http_root": WWW}, "192K", "wsfuzz")
        self.b.wait_log("websocket and http on")
        self.mon = Paho(self.b.port, "wsfz-mon", version=4)
        self.mon.sub("$SYS/broker/heap/free", 0)
        self.n = 0

    def heap(self):
        self.mon.clear()
        return int(self.mon.wait(1, timeout=4)[-1].payload)

    def send(self, frames, timeout=3, quiet=0.3):
        """Frames on a fresh upgraded connection; read until the broker
        closes or goes quiet. Returns True when it closed."""
        w = WS(self.ws_port, timeout=timeout)
        assert w.status == 101, w.head
        try:
            w.send(b"".join(frames))
            w.s.settimeout(quiet)
            end = time.time() + timeout
            while time.time() < end:
                try:
                    if not w.s.recv(65536):
                        return True
                except socket.timeout:
                    return False
                except (ConnectionResetError, BrokenPipeError):
                    return True
            return False
        finally:
            w.close()

    def check(self):
        self.b.check_clean()
        # A fresh WebSocket client and a TCP client both get through.
        self.n += 1
        msg = b"n%d" % self.n
        w = WS(self.ws_port)
        assert w.status == 101
        w.send(frame(2, connect("wsfz-live", 4)))
        assert w.mqtt()[0] == 0x20
        w.send(frame(2, subscribe(1, [("wsfz/t", 0)])))
        assert w.mqtt()[0] == 0x90
        r = Raw(self.b.port)
        r.connect("wsfz-tcp", 4)
        r.send(publish("wsfz/t", msg))
        first, body = w.mqtt()
        assert first == 0x30 and body.endswith(msg), (first, body)
        r.close()
        w.close()


@pytest.fixture(scope="module")
def wfz(tmp_path_factory):
    f = WSFuzz(tmp_path_factory.mktemp("wsfuzz"))
    for v in (4, 5):  # warm-up: first-use allocations behind us
        f.send([frame(2, connect("w", v) + subscribe(1, [("w/#", 1)], v) + publish("w/a", b"x", 1, 2, v=v))])
        f.check()
    time.sleep(2.5)
    f.h0 = f.heap()
    yield f
    f.mon.stop()
    f.b.stop()


@st.composite
def mqtt_bytes(draw, v):
    kind = draw(st.sampled_from(["valid", "certain", "mutated", "random"]))
    if kind == "valid":
        b = draw(F.client_packet(v))[0]
    elif kind == "certain":
        b = draw(F.structural_bad(v))
    elif kind == "mutated":
        b = draw(F.client_packet(v).flatmap(lambda p: F.mutate(p[0])))
    else:
        b = draw(st.binary(min_size=1, max_size=40))
    return connect("wsfz-%d" % v, v) + b


@st.composite
def framed(draw, data):
    # The bytes in binary/continuation frames of random sizes, sometimes with
    # one broken frame (or a ping) somewhere.
    out = []
    i = 0
    first = True
    while i < len(data):
        k = draw(st.integers(1, max(1, len(data) - i)))
        last = i + k >= len(data)
        out.append(frame(2 if first else 0, data[i:i + k], fin=last))
        first = False
        i += k
    bad = draw(st.sampled_from([None, None, "unmasked", "rsv", "opcode", "long-ping",
                                "fragmented-ping", "ping", "text"]))
    if bad:
        f = {"unmasked": frame(2, b"\x30\x00", mask=False),
             "rsv": frame(2, b"\xc0\x00", rsv=0x40),
             "opcode": frame(3, b"x"),
             "long-ping": frame(9, b"p" * 126),
             "fragmented-ping": frame(9, b"p", fin=False),
             "ping": frame(9, b"hello"),
             "text": frame(1, b"\xc0\x00")}[bad]
        out.insert(draw(st.integers(0, len(out))), f)
    return out


@settings(max_examples=60, **SETTINGS)
@given(v=st.sampled_from([4, 5]), data=st.data())
def test_fuzzed_mqtt_in_fuzzed_frames(wfz, v, data):
    frames = data.draw(mqtt_bytes(v).flatmap(framed), "frames")
    wfz.send(frames)
    wfz.check()


def test_heap_after_ws_fuzz(wfz):
    # Its own load, so it can fail when run alone: 60 connections of valid,
    # broken and abandoned WebSocket traffic, then the heap against warm-up.
    h0 = wfz.heap()
    for i in range(60):
        v = 4 + i % 2
        body = connect("wsh%d" % (i % 7), v) + subscribe(1, [("h/#", 1)], v) + \
            publish("h/a", b"x" * (i % 50), 1, 3, v=v)
        cases = [[frame(2, body)],
                 [frame(2, body[:5], fin=False), frame(0, body[5:])],
                 [frame(2, body), frame(2, b"\x30\x00", mask=False)],
                 [frame(2, body[:3])],  # abandoned mid-packet
                 [frame(2, body), frame(9, b"p" * 126)]]
        wfz.send(cases[i % len(cases)], timeout=1, quiet=0.05)
    wfz.check()
    time.sleep(2.5)  # their persistent sessions (if any) expire
    h1 = wfz.heap()
    assert h1 >= min(h0, wfz.h0) - 512, (wfz.h0, h0, h1)
