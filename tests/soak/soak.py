#!/usr/bin/env python3
# Soak: N messages (default 1,000,000) through the broker on the MicroPython
# Unix port under a board's 128 KB heap (128wK, see HEAP), with clients
# connecting and leaving the whole time. Run by `make soak [SOAK_MESSAGES=N]`;
# tests/host/test_broker_soak_short.py runs a short one in `make test`.
#
# Load: two long-lived subscribers (3.1.1 QoS 0 on soak/# which also reads
# $SYS/broker/heap/free, 5.0 QoS 1 on soak/q1/#) and two workers that loop:
# CONNECT (3.1.1 and 5.0 in turn, clean or persistent sessions from a small
# set of client ids so sessions are resumed, some with a will), sometimes
# SUBSCRIBE, a pipelined batch of QoS 0 PUBLISHes, one QoS 1 and one QoS 2
# flow, then leave (DISCONNECT, an abrupt close that fires the will, or v5
# DISCONNECT with a session expiry).
#
# Heap: $SYS/broker/heap/free is gc.mem_free() after gc.collect() in the
# broker. It is read at quiescent checkpoints (workers paused, offline
# sessions expired) after a warm-up and every 10% of the run: same broker
# state, so any difference is drift. Errors: a broker log line at ERROR
# level or a traceback, an unexpected answer or a timeout on the client side;
# a refusal while a slot is still being freed is retried and counted apart.
import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MPY = os.path.join(ROOT, ".venv", "bin", "micropython")
# SOAK_LIB (or --lib): soak another build of the library, e.g. build/unix/lib.
LIB = os.environ.get("SOAK_LIB") or os.path.join(ROOT, "firmware", "lib")

# The broker tests' heap (tests/host/test_broker_helpers.py): 128K
# word-adjusted, i.e. what 128 KB holds on a 32-bit board (256 KB of this
# 64-bit port's heap); the broker compiled from source with every optional
# module's hooks no longer starts in 128 KB of 64-bit objects. BROKER_HEAP or
# --heap overrides (e.g. 128K with the .mpy build: --lib build/unix/lib).
HEAP = os.environ.get("BROKER_HEAP", "128wK")

# Broker defaults except: $SYS every second (the heap reading), short session
# expiry (so a checkpoint sees no offline sessions).
CFG = {"sys_interval": 1, "session_expiry_max": 1, "log_level": "info"}
QUIET = 2.6  # s for offline sessions (expiry 1 s) and their wills to go
# Allowed heap drift between checkpoints: 8 GC blocks (16 bytes each on this
# 64-bit port). Checkpoints compare the same broker state (the same probe
# connection last); measured readings still wander within 96 bytes with no
# trend over 1,000,000 messages, while a leak of even one small object per
# connection would show as KB over the thousands of connections.
DRIFT = 128


sys.path.insert(0, os.path.join(ROOT, "tests", "host"))
from test_broker_helpers import varint, s16  # noqa: E402  (hand-built packet pieces)


def pkt(first, body):
    return bytes([first]) + varint(len(body)) + body


def connect(cid, v, clean=True, will=False, expiry=None):
    flags = 0x02 if clean else 0
    pay = s16(cid)
    if will:
        flags |= 0x04 | (1 << 3)
        pay += (b"\x00" if v == 5 else b"") + s16("soak/will/" + cid) + s16(b"gone")
    var = s16(b"MQTT") + bytes([v, flags]) + struct.pack(">H", 30)
    if v == 5:
        pr = b"" if expiry is None else b"\x11" + struct.pack(">I", expiry)
        var += varint(len(pr)) + pr
    return pkt(0x10, var + pay)


def publish(topic, payload, qos=0, pid=0, v=4):
    body = s16(topic) + (struct.pack(">H", pid) if qos else b"") + (b"\x00" if v == 5 else b"")
    return pkt(0x30 | (qos << 1), body + payload)


def subscribe(pid, flt, qos, v):
    return pkt(0x82, struct.pack(">H", pid) + (b"\x00" if v == 5 else b"") + s16(flt) + bytes([qos]))


class Peer:
    """A blocking MQTT connection reading whole packets."""

    def __init__(self, port, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port), timeout)
        self.s.settimeout(timeout)
        self.buf = bytearray()
        self.pos = 0

    def send(self, b):
        self.s.sendall(b)

    def read(self):
        while True:
            b = self.buf
            p = self.pos
            if len(b) - p >= 2:
                n = shift = 0
                j = p + 1
                while j < len(b):
                    c = b[j]
                    n |= (c & 0x7F) << shift
                    shift += 7
                    j += 1
                    if not c & 0x80:
                        break
                else:
                    j = -1
                if j > 0 and len(b) >= j + n:
                    self.pos = j + n
                    return b[p], bytes(b[j:j + n])
            if p:
                del self.buf[:p]
                self.pos = 0
            d = self.s.recv(1 << 16)
            if not d:
                raise EOFError("closed by the broker")
            self.buf += d

    def wait_close(self):
        try:
            while self.s.recv(1 << 16):
                pass
        except OSError:
            pass

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.messages = 0       # PUBLISHes the workers sent into the broker
        self.connects = 0
        self.refused = 0        # CONNACK "busy" while a slot was being freed: retried
        self.errors = []
        self.delivered = 0      # what the QoS 0 subscriber got
        self.delivered_q1 = 0
        self.heap = None        # last $SYS/broker/heap/free
        self.heap_seen = 0
        self.dropped = 0

    def error(self, what):
        with self.lock:
            self.errors.append(what)


class Soak:
    def __init__(self, messages, heap=HEAP, batch=200, log=None, port=None, quiet=False, lib=LIB,
                 tmpdir=None):
        self.n = messages
        self.batch = batch
        self.st = Stats()
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.idle = [threading.Event(), threading.Event()]
        self.quiet = quiet
        tmp = str(tmpdir) if tmpdir else tempfile.mkdtemp(prefix="soak")  # kept: the log
        self.cfg_path = os.path.join(tmp, "soak.json")
        with open(self.cfg_path, "w") as f:
            json.dump(CFG, f)
        self.log_path = log or os.path.join(tmp, "broker.log")
        self._log = open(self.log_path, "wb")
        if port is None:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
        self.port = port
        env = dict(os.environ, MICROPYPATH=lib)
        self.proc = subprocess.Popen(
            [MPY, "-X", "heapsize=" + heap, "-m", "umqtt_full.broker", "--host", "127.0.0.1",
             "--port", str(port), "--config", self.cfg_path],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT,
            start_new_session=True)
        end = time.time() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > end:
                    raise RuntimeError("broker did not start:\n" + self.log())
                time.sleep(0.05)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def close(self):
        # Ends the broker if run() did not get to (an exception, ^C).
        self.stop.set()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def say(self, msg):
        if not self.quiet:
            print(msg, flush=True)

    # ---- the long-lived subscribers ------------------------------------------------

    def sub0(self):
        st = self.st
        p = Peer(self.port)
        p.send(connect("soak-sub0", 4))
        assert p.read()[0] == 0x20
        p.send(subscribe(1, "soak/#", 0, 4) + subscribe(2, "$SYS/broker/heap/free", 0, 4) +
               subscribe(3, "$SYS/broker/messages/dropped", 0, 4))
        p.s.settimeout(1)
        heap_topic = s16(b"$SYS/broker/heap/free")
        drop_topic = s16(b"$SYS/broker/messages/dropped")
        ping = time.time()
        while not self.stop.is_set():
            if time.time() - ping > 5:  # keepalive 30 s: only reading is silence
                ping = time.time()
                p.send(b"\xc0\x00")
            try:
                first, body = p.read()
            except socket.timeout:
                continue
            except Exception as e:
                st.error("sub0: %r" % e)
                return
            if first >> 4 == 3:
                if body[2:3] == b"$":
                    if body.startswith(heap_topic):
                        st.heap = int(body[len(heap_topic):])
                        st.heap_seen += 1
                    elif body.startswith(drop_topic):
                        st.dropped = int(body[len(drop_topic):])
                else:
                    st.delivered += 1
        p.close()

    def sub1(self):
        st = self.st
        p = Peer(self.port)
        p.send(connect("soak-sub1", 5))
        assert p.read()[0] == 0x20
        p.send(subscribe(1, "soak/q1/#", 1, 5))
        p.s.settimeout(1)
        ping = time.time()
        while not self.stop.is_set():
            if time.time() - ping > 5:
                ping = time.time()
                p.send(b"\xc0\x00")
            try:
                first, body = p.read()
            except socket.timeout:
                continue
            except Exception as e:
                st.error("sub1: %r" % e)
                return
            if first >> 4 == 3:
                st.delivered_q1 += 1
                q = (first >> 1) & 3
                if q:
                    n = struct.unpack(">H", body[:2])[0]
                    pid = body[2 + n:4 + n]
                    p.send((b"\x40\x02" if q == 1 else b"\x50\x02") + pid)
            elif first >> 4 == 6:  # PUBREL
                p.send(b"\x70\x02" + body[:2])
        p.close()

    # ---- the workers -----------------------------------------------------------------

    def worker(self, w):
        st = self.st
        it = 0
        batch = {v: b"".join(publish("soak/t/%d" % (k % 7), b"m%05d" % k + b"p" * 48, v=v)
                             for k in range(self.batch)) for v in (4, 5)}
        while not self.stop.is_set():
            if self.paused.is_set():
                self.idle[w].set()
                time.sleep(0.05)
                continue
            self.idle[w].clear()
            v = 5 if it % 2 else 4
            cid = "soak-w%d-%d" % (w, (it // 3) % 2)  # sessions: 2 subscribers + 4 worker ids
            clean = (it // 2) % 4 != 0
            will = it % 5 == 0
            leave = it % 3
            it += 1
            try:
                self._one(v, cid, clean, will, leave, batch[v])
            except Exception as e:
                st.error("worker %d %s v%d: %r" % (w, cid, v, e))
                time.sleep(0.2)

    def _one(self, v, cid, clean, will, leave, batch):
        st = self.st
        p = Peer(self.port)
        try:
            p.send(connect(cid, v, clean, will, expiry=None if clean else 1))
            first, body = p.read()
            if first != 0x20:
                raise AssertionError("expected CONNACK, got 0x%02x" % first)
            if body[1] in (0x03, 0x97):  # a slot not freed yet: documented refusal
                with st.lock:
                    st.refused += 1
                time.sleep(0.05)
                return
            if body[1]:
                raise AssertionError("CONNACK 0x%02x" % body[1])
            with st.lock:
                st.connects += 1
            if leave == 0:
                p.send(subscribe(1, "soak/q1/%s" % cid, 1, v))
                self._until(p, 0x90)
            p.send(batch + b"\xc0\x00")
            self._until(p, 0xD0)
            p.send(publish("soak/q1/x", b"one", 1, 7, v))
            self._until(p, 0x40)
            p.send(publish("soak/q1/%s" % cid, b"two", 2, 8, v))
            self._until(p, 0x50)
            p.send(b"\x62\x02\x00\x08")
            self._until(p, 0x70)
            with st.lock:
                st.messages += self.batch + 2
            if leave == 1:
                p.close()  # abrupt: the will (if any) is published
                return
            if leave == 2 and v == 5:
                # DISCONNECT with Session Expiry 0: the session ends now
                p.send(b"\xe0\x07\x00\x05\x11\x00\x00\x00\x00")
            else:
                p.send(b"\xe0\x00")
            p.wait_close()
        finally:
            p.close()

    def _until(self, p, want):
        # Read until a packet whose first byte is `want`; acknowledge the
        # QoS 1/2 deliveries that come in between.
        while True:
            first, body = p.read()
            if first == want:
                return body
            t = first >> 4
            if t == 3:
                q = (first >> 1) & 3
                if q:
                    n = struct.unpack(">H", body[:2])[0]
                    pid = body[2 + n:4 + n]
                    p.send((b"\x40\x02" if q == 1 else b"\x50\x02") + pid)
            elif t == 6:
                p.send(b"\x70\x02" + body[:2])
            elif t not in (5, 7, 9):  # PUBREC/PUBCOMP/SUBACK of ours arrive before `want`
                raise AssertionError("unexpected packet 0x%02x waiting for 0x%02x" % (first, want))

    # ---- the run ------------------------------------------------------------------------

    def quiescent_heap(self):
        """Pause the workers, let offline sessions expire, read heap free."""
        self.paused.set()
        for e in self.idle:
            e.wait(30)
        time.sleep(QUIET)
        # The same last CONNECT/SUBSCRIBE/UNSUBSCRIBE/DISCONNECT every time:
        # the broker's decode target keeps the last of each (a Connect, a
        # topic list, a properties dict) until the next one replaces it.
        p = Peer(self.port)
        p.send(connect("soak-probe", 5))
        assert p.read()[0] == 0x20
        p.send(subscribe(1, "soak/probe", 0, 5))
        assert p.read()[0] == 0x90
        p.send(pkt(0xA2, b"\x00\x02\x00" + s16("soak/probe")))
        assert p.read()[0] == 0xB0
        p.send(b"\xe0\x00")
        p.wait_close()
        p.close()
        seen = self.st.heap_seen
        end = time.time() + 5
        while self.st.heap_seen < seen + 2 and time.time() < end:
            time.sleep(0.1)
        if self.st.heap_seen < seen + 2:
            self.st.error("no fresh $SYS/broker/heap/free reading at a checkpoint")
            h = None
        else:
            h = self.st.heap
        self.paused.clear()
        return h

    def run(self, checkpoints=10, warmup=0.02):
        st = self.st
        t0 = time.time()
        threads = [threading.Thread(target=self.sub0, daemon=True),
                   threading.Thread(target=self.sub1, daemon=True)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        self.paused.set()
        workers = [threading.Thread(target=self.worker, args=(w,), daemon=True) for w in (0, 1)]
        for t in workers:
            t.start()
        self.paused.clear()
        marks = [int(self.n * warmup)] + [self.n * k // checkpoints for k in range(1, checkpoints + 1)]
        heaps = []
        last_print = 0
        for m in marks:
            while st.messages < m and self.proc.poll() is None and len(st.errors) < 20:
                time.sleep(0.05)
                if time.time() - last_print > 5:
                    last_print = time.time()
                    self.say("soak: %d/%d messages, %d connects, %d delivered, heap free %s, "
                             "%d errors, %.0f s" % (st.messages, self.n, st.connects, st.delivered,
                                                    st.heap, len(st.errors), time.time() - t0))
            if self.proc.poll() is not None or len(st.errors) >= 20:
                break
            h = self.quiescent_heap()
            if h is None:
                break
            heaps.append((st.messages, h))
            self.say("soak: checkpoint at %d messages: heap free %d after gc (quiescent)"
                     % (st.messages, h))
        self.stop.set()
        for t in workers + threads:
            t.join(10)
        alive = self.proc.poll() is None
        log = self.log()
        self.proc.kill()
        self.proc.wait(5)
        self._log.close()
        errs = [l for l in log.splitlines() if " ERROR " in l or "Traceback" in l or "MemoryError" in l]
        warns = [l for l in log.splitlines() if " WARN " in l]
        took = time.time() - t0
        r = {
            "messages": st.messages, "connects": st.connects, "refused_retried": st.refused,
            "delivered_qos0_sub": st.delivered, "delivered_qos1_sub": st.delivered_q1,
            "dropped": st.dropped, "errors": len(st.errors) + len(errs) + (0 if alive else 1),
            "client_errors": st.errors[:10], "broker_errors": errs[:10], "broker_alive": alive,
            "broker_warnings": len(warns), "warning_samples": warns[:5],
            "heap_start": heaps[0][1] if heaps else None, "heap_end": heaps[-1][1] if heaps else None,
            "heap_checkpoints": heaps, "seconds": round(took, 1),
            "msg_per_s": round(st.messages / took) if took else 0,
        }
        return r


def main(argv=None):
    ap = argparse.ArgumentParser(description="broker soak under a board's 128 KB heap")
    ap.add_argument("--messages", type=int, default=1000000)
    ap.add_argument("--heap", default=HEAP)
    ap.add_argument("--checkpoints", type=int, default=10)
    ap.add_argument("--log", default=None, help="broker log file (default: a temp dir)")
    ap.add_argument("--lib", default=LIB, help="library path (e.g. build/unix/lib for the .mpy build)")
    ap.add_argument("--json", default=None, help="write the summary here too")
    a = ap.parse_args(argv)
    s = Soak(a.messages, a.heap, log=a.log, lib=os.path.abspath(a.lib))
    print("soak: %d messages, broker heap %s, port %d, log %s" % (a.messages, a.heap, s.port, s.log_path),
          flush=True)
    try:
        r = s.run(a.checkpoints)
    finally:
        s.close()
    hs = [h for _, h in r["heap_checkpoints"]]
    drift = hs[-1] - hs[0] if hs else None
    print("soak summary: %d messages (%d msg/s) in %.0f s; %d connects (%d refusals retried); "
          "heap free after gc: start %s, end %s, drift %s bytes; min checkpoint %s; "
          "%d delivered to the QoS 0 subscriber, %d dropped; %d broker warnings; %d errors; "
          "broker alive: %s"
          % (r["messages"], r["msg_per_s"], r["seconds"], r["connects"], r["refused_retried"],
             r["heap_start"], r["heap_end"], drift, min(hs) if hs else None,
             r["delivered_qos0_sub"], r["dropped"], r["broker_warnings"], r["errors"], r["broker_alive"]))
    if r["client_errors"] or r["broker_errors"]:
        print("errors: %s" % json.dumps(r["client_errors"] + r["broker_errors"], indent=1))
    if r["warning_samples"]:
        print("warning samples: %s" % json.dumps(r["warning_samples"], indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
    # Pass: no errors, the broker alive, every message sent, and no
    # checkpoint more than DRIFT bytes below the first.
    ok = r["errors"] == 0 and r["broker_alive"] and r["messages"] >= a.messages and hs \
        and min(hs) >= hs[0] - DRIFT
    print("soak: %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
