# Shared pieces for the client tests (no tests here): run MicroPython scripts
# against a mosquitto started for the test, a cut/stall/slow TCP proxy, paho peers.
import collections
import os
import socket
import subprocess
import tempfile
import threading
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MPY = os.path.join(ROOT, ".venv", "bin", "micropython")
LIB = os.path.join(ROOT, "firmware", "lib")
MOSQ = "/usr/sbin/mosquitto"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d not listening" % port)


def _env():
    e = dict(os.environ)
    e["MICROPYPATH"] = LIB + ":.frozen"  # .frozen holds ssl and asyncio
    return e


def run_mpy(code, heap="128K", timeout=60, check=True):
    # Run a MicroPython script (source text); returns stdout. Fails the test
    # with stdout/stderr on a non-zero exit when check is set.
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(code)
        path = f.name
    try:
        p = subprocess.run([MPY, "-X", "heapsize=" + heap, path], capture_output=True,
                           text=True, timeout=timeout, env=_env(), cwd=ROOT)
    finally:
        os.unlink(path)
    if check and p.returncode:
        raise AssertionError("micropython exit %d\nstdout:\n%s\nstderr:\n%s"
                             % (p.returncode, p.stdout, p.stderr))
    return p.stdout


def start_mpy(code, heap="128K"):
    f = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
    f.write(code)
    f.close()
    p = subprocess.Popen([MPY, "-X", "heapsize=" + heap, f.name], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    p.script = f.name
    return p


def finish(p, timeout=60):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError("micropython timed out\nstdout:\n%s\nstderr:\n%s" % (out, err))
    finally:
        os.unlink(p.script)
    if p.returncode:
        raise AssertionError("micropython exit %d\nstdout:\n%s\nstderr:\n%s"
                             % (p.returncode, out, err))
    return out


def results(out):
    # Lines "R key value" printed by the scripts -> {key: value}
    r = {}
    for line in out.splitlines():
        if line.startswith("R "):
            _, k, v = line.split(" ", 2)
            r[k] = v
    return r


class Mosquitto:
    def __init__(self, tmp, extra="", tls=None):
        self.host = "127.0.0.1"
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.conf = os.path.join(tmp, "mosq-%d.conf" % self.port)
        lines = ["listener %d 127.0.0.1" % self.port, "allow_anonymous true",
                 "persistence false", "log_type none"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops privileges and cannot read tmp_path
        if tls:
            lines += ["listener %d 127.0.0.1" % self.tls_port, "allow_anonymous true",
                      "cafile " + tls["ca"], "certfile " + tls["cert"],
                      "keyfile " + tls["key"]]
        lines.append(extra)
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen([MOSQ, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()

    def restart(self):
        self.stop()
        self.start()


@pytest.fixture
def mosquitto_factory(tmp_path):
    made = []

    def make(extra="", tls=None):
        m = Mosquitto(str(tmp_path), extra, tls)
        made.append(m)
        return m
    yield make
    for m in made:
        m.kill()


@pytest.fixture
def mosq(mosquitto_factory):
    return mosquitto_factory()


class Proxy:
    # A TCP proxy between the client and the broker that the test can cut
    # (close every connection), stall (stop forwarding, keep sockets open) or
    # slow down. Slow: `delay` s added to every chunk's trip in each direction
    # (a latency: chunks keep flowing while earlier ones wait), and/or `rate`
    # bytes per second in each direction, written in pieces of rate/50 bytes
    # with TCP_NODELAY (so packets arrive in parts); `delay_down`/`rate_down`,
    # when not None, replace them for the broker->client direction. Set them
    # at any time: a connection accepted while delay or rate is set is a slow
    # one and reads them for every chunk; a connection accepted with both 0
    # is forwarded directly, as before. up_total/down_total count bytes.
    SLOW_BUFFER = 65536  # bytes a slow direction holds before it stops reading

    def __init__(self, target_port, delay=0.0, rate=0):
        self.target = target_port
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.conns = []
        self.held = {}  # slow connections: {(src, up): [bytes waiting]}
        self.accepted = 0
        self.stalled = False
        self.refuse = False
        self.delay = delay
        self.rate = rate
        self.delay_down = None
        self.rate_down = None
        self.cut_after = None  # cut when this many client->broker bytes have passed
        self.up_bytes = 0
        self.up_total = 0  # client->broker bytes forwarded
        self.down_total = 0  # broker->client bytes forwarded
        self.lock = threading.Lock()
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.running:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            if self.refuse:
                c.close()
                continue
            try:
                b = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns.append((c, b))
                self.accepted += 1
            pipe = self._pipe
            if self.delay or self.rate:
                pipe = self._slow_pipe
                for s in (c, b):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=pipe, args=(c, b, True), daemon=True).start()
            threading.Thread(target=pipe, args=(b, c, False), daemon=True).start()

    def _count(self, d, up):
        # Counts a chunk read from src; False when it triggers cut_after.
        if up:
            self.up_total += len(d)
        else:
            self.down_total += len(d)
        if up and self.cut_after is not None:
            self.up_bytes += len(d)
            if self.up_bytes >= self.cut_after:
                self.cut_after = None
                self.cut()
                return False
        return True

    def _pipe(self, src, dst, up):
        try:
            while True:
                d = src.recv(4096)
                if not d:
                    break
                while self.stalled:
                    time.sleep(0.01)
                if not self._count(d, up):
                    return
                dst.sendall(d)
        except OSError:
            pass
        self._close_pair(src, dst)

    @staticmethod
    def _close_pair(src, dst):
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _slow_pipe(self, src, dst, up):
        # This thread reads and stamps each chunk with when it may leave; a
        # writer thread sends them in order, at most `rate` bytes/s. At most
        # SLOW_BUFFER bytes wait (then reading stops: TCP back-pressure).
        q = collections.deque()
        cv = threading.Condition()
        st = {"eof": False, "held": 0, "dead": False}
        self.held[(src, up)] = st

        def writer():
            nxt = time.monotonic()
            try:
                while True:
                    with cv:
                        while not q and not st["eof"]:
                            cv.wait(0.05)
                        if not q:
                            break                       # EOF and all sent
                        due, d = q.popleft()
                        st["held"] -= len(d)
                        cv.notify_all()
                    w = due - time.monotonic()
                    if w > 0:
                        time.sleep(w)
                    while self.stalled:
                        time.sleep(0.01)
                    rate = self.rate if up or self.rate_down is None else self.rate_down
                    if not rate:
                        dst.sendall(d)
                        continue
                    piece = max(1, int(rate) // 50)
                    for i in range(0, len(d), piece):
                        now = time.monotonic()
                        if nxt > now:
                            time.sleep(nxt - now)
                        else:
                            nxt = now
                        part = d[i:i + piece]
                        dst.sendall(part)
                        nxt += len(part) / rate
            except OSError:
                pass
            with cv:
                st["dead"] = True
                cv.notify_all()
            self._close_pair(src, dst)

        threading.Thread(target=writer, daemon=True).start()
        try:
            while True:
                d = src.recv(4096)
                if not d:
                    break
                if not self._count(d, up):
                    break
                with cv:
                    while st["held"] > self.SLOW_BUFFER and not st["dead"]:
                        cv.wait(0.05)
                    if st["dead"]:
                        break
                    delay = self.delay if up or self.delay_down is None else self.delay_down
                    q.append((time.monotonic() + delay, d))
                    st["held"] += len(d)
                    cv.notify_all()
        except OSError:
            pass
        with cv:
            st["eof"] = True
            cv.notify_all()

    def up_held(self):
        # Client->broker bytes waiting in slow connections now.
        return sum(st["held"] for (src, up), st in list(self.held.items()) if up and not st["dead"])

    def cut(self):
        with self.lock:
            cs = self.conns
            self.conns = []
        for c, b in cs:
            for s in (c, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass

    def close(self):
        self.running = False
        self.cut()
        self.ls.close()


@pytest.fixture
def proxy_factory():
    made = []

    def make(port):
        p = Proxy(port)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


def paho(port, client_id="", version=4, **kw):
    import paho.mqtt.client as mqtt
    proto = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto, **kw)
    return c


class Collector:
    # A paho subscriber that records (topic, payload, qos, retain, props).
    def __init__(self, port, topic, qos=2, version=4, client_id="", clean=True):
        import paho.mqtt.client as mqtt
        self.msgs = []
        self.cv = threading.Condition()
        kw = {}
        if version == 4:
            kw["clean_session"] = clean
        self.c = paho(port, client_id, version, **kw)
        self.c.on_message = self._on
        ready = threading.Event()
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos)
        self.c.connect("127.0.0.1", port, 30)
        self.c.loop_start()
        assert ready.wait(10), "paho subscribe"
        self.mqtt = mqtt

    def _on(self, c, u, m):
        with self.cv:
            self.msgs.append((m.topic, m.payload, m.qos, m.retain, m.properties))
            self.cv.notify_all()

    def wait(self, n, timeout=20):
        end = time.time() + timeout
        with self.cv:
            while len(self.msgs) < n and time.time() < end:
                self.cv.wait(0.2)
        return self.msgs

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()
