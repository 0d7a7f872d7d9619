"""The three brokers of the broker benchmark, each on a free loopback port:
umqtt_full's broker on the MicroPython Unix port, mosquitto (the harness's
Mosquitto, logging like a production install rather than every packet) and
amqtt (from the bench's scratch venv). Each has .host .port .pid .start()
.stop() .alive() and .name."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.support.harness import Mosquitto, free_port, wait_port  # noqa: E402

MICROPYTHON = REPO / ".venv" / "bin" / "micropython"


def rss_kb(pid):
    """VmRSS of a process in KB (Linux /proc)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return int(parts[11]) + int(parts[12])  # utime + stime


def settle(pid, idle=0.1, timeout=10.0):
    """Wait until the process has used under 10% of a CPU for 0.3 s (backlog
    from the previous load is done), at most `timeout` seconds."""
    hz = os.sysconf("SC_CLK_TCK")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        a = cpu_ticks(pid)
        time.sleep(0.3)
        if (cpu_ticks(pid) - a) / hz < 0.3 * idle:
            return True
    return False


class _Proc:
    host = "127.0.0.1"
    proc = None

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self):
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""


class Ours(_Proc):
    """micropython -X heapsize=HEAP -m umqtt_full.broker with MICROPYPATH=lib
    (the .mpy build, as a board runs it, or firmware/lib for source)."""

    name = "umqtt_full"

    def __init__(self, workdir, cfg, lib, heap="128K", tag="ours"):
        self.workdir = Path(workdir)
        self.cfg = cfg
        self.lib = str(lib)
        self.heap = heap
        self.port = free_port()
        self.cfg_path = self.workdir / ("%s.json" % tag)
        self.log_path = self.workdir / ("%s.log" % tag)

    def start(self, timeout=15):
        self.cfg_path.write_text(json.dumps(self.cfg))
        env = dict(os.environ, MICROPYPATH=self.lib)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(MICROPYTHON), "-X", "heapsize=" + self.heap, "-m", "umqtt_full.broker",
                 "--host", self.host, "--port", str(self.port), "--config", str(self.cfg_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=str(REPO), start_new_session=True)
        end = time.monotonic() + timeout
        while "listening on" not in self.log():
            if not self.alive() or time.monotonic() > end:
                self.stop()
                raise RuntimeError("umqtt_full broker did not start:\n" + self.log()[-2000:])
            time.sleep(0.05)
        return self

    def stop(self):
        # SIGKILL: the broker has no SIGTERM handler to wait for.
        if self.alive():
            self.proc.kill()
            self.proc.wait(5)

    def tables_bytes(self):
        import re
        m = re.search(r"tables (\d+) bytes", self.log())
        return int(m.group(1)) if m else None


class Mosq(Mosquitto):
    """The harness's Mosquitto without per-packet logging (log_type all would
    write a line per PUBLISH, which no production install does)."""

    name = "mosquitto"

    def _write_conf(self):
        super()._write_conf()
        text = self.conf_path.read_text().replace(
            "log_type all\n", "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n")
        self.conf_path.write_text(text)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class Amqtt(_Proc):
    """amqtt's `amqtt -c config.yaml` broker from the scratch venv, anonymous,
    no $SYS and no packet logging."""

    name = "amqtt"

    def __init__(self, workdir, venv):
        self.workdir = Path(workdir)
        self.exe = Path(venv) / "bin" / "amqtt"
        self.port = free_port()
        self.conf_path = self.workdir / "amqtt.yaml"
        self.log_path = self.workdir / "amqtt.log"

    def start(self, timeout=30):
        self.conf_path.write_text(
            "listeners:\n  default:\n    type: tcp\n    bind: %s:%d\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n" % (self.host, self.port))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([str(self.exe), "-c", str(self.conf_path)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=str(self.workdir), start_new_session=True)
        try:
            wait_port(self.host, self.port, timeout, proc=self.proc)
        except (AssertionError, TimeoutError) as e:
            self.stop()
            raise RuntimeError("amqtt did not start: %s\n%s" % (e, self.log()[-2000:])) from None
        return self
