"""firmware/boot.py's Wi-Fi logic on the Unix port. No radio here, so a
stand-in `network` module (the ESP32/Pico W WLAN API surface boot.py uses,
scripted per test: which attempt joins, what the AP is given) sits on the
module path with a secrets.py. What is checked is boot.py's own decisions:
retries and back-off, the access point and its settings, the sta+ap
fallback, refusing a short WPA2 password, no secrets, no network module."""

import os
import textwrap

import pytest

from support.harness import run_mpy

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BOOT = os.path.join(ROOT, "firmware", "boot.py")

FAKE_NETWORK = textwrap.dedent("""
    # Scripted stand-in for the port's network module.
    import time
    STA_IF = 0
    AP_IF = 1
    JOIN_ON = %(join_on)d  # connect() attempt that succeeds (0: never)
    log = []
    _host = []

    def hostname(n):
        _host.append(n)
        log.append("hostname " + n)

    class WLAN:
        def __init__(self, which):
            self.which = which
            self.tries = 0
            self.up = False
            self.cfg = {}
            self._active = False

        def active(self, on=None):
            if on is not None:
                self._active = on
                log.append("%%s active %%s" %% ("ap" if self.which else "sta", on))
            return self._active

        def connect(self, ssid, pw):
            self.tries += 1
            log.append("connect %%s %%s #%%d" %% (ssid, pw, self.tries))
            self.up = self.tries == JOIN_ON

        def isconnected(self):
            return self.up

        def disconnect(self):
            log.append("disconnect")

        def status(self):
            return -2

        def config(self, **kw):
            self.cfg.update(kw)
            log.append("ap config " + ",".join("%%s=%%s" %% kv for kv in sorted(kw.items())))

        def ifconfig(self):
            return ("192.168.4.1" if self.which else "10.0.0.7", "255.255.255.0", "", "")
    """)

RUN = textwrap.dedent("""
    import time
    t0 = time.ticks_ms()
    exec(open(%r).read())
    import network
    print("WIFI", WIFI)
    print("LOG", " | ".join(network.log))
    print("MS", time.ticks_diff(time.ticks_ms(), t0))
    """)


def boot(tmp_path, secrets=None, join_on=0, network=True):
    d = tmp_path / "board"
    d.mkdir(parents=True)
    if network:
        (d / "network.py").write_text(FAKE_NETWORK % {"join_on": join_on})
    if secrets is not None:
        (d / "secrets.py").write_text(secrets)
    code = RUN % BOOT if network else "exec(open(%r).read())\nprint('WIFI', WIFI)\n" % BOOT
    r = run_mpy(code, path=[str(d)], timeout=60)
    out = dict(line.split(" ", 1) for line in r.stdout.splitlines()
               if line.split(" ", 1)[0] in ("WIFI", "LOG", "MS"))
    return out, r.stdout


STA = textwrap.dedent("""
    WIFI_SSID = "home"
    WIFI_PASSWORD = "pw"
    WIFI_RETRIES = 3
    WIFI_WAIT_MS = 300
    AP_SSID = "board-ap"
    AP_PASSWORD = "longenough"
    HOSTNAME = "umqtt-1"
    """)


def test_station_joins_on_the_second_attempt(tmp_path):
    out, text = boot(tmp_path, STA, join_on=2)
    assert out["WIFI"] == "sta", text
    log = out["LOG"]
    assert log.startswith("hostname umqtt-1 | sta active True | connect home pw #1"), log
    assert "disconnect" in log and "connect home pw #2" in log and "#3" not in log, log
    assert "ap " not in log  # "sta" mode never starts the access point
    assert "boot: Wi-Fi attempt 1/3 failed" in text and "boot: Wi-Fi up, 10.0.0.7" in text


def test_station_gives_up_after_its_retries_and_stays_offline(tmp_path):
    out, text = boot(tmp_path, STA, join_on=0)
    assert out["WIFI"] == "None", text
    assert "connect home pw #3" in out["LOG"] and "#4" not in out["LOG"]
    assert "ap active" not in out["LOG"]
    assert "boot: Wi-Fi down, continuing offline" in text
    # Three waits of 300 ms plus back-off of 300 ms each (capped at the wait).
    assert int(out["MS"]) >= 3 * 300 + 3 * 300 - 50, out["MS"]


def test_access_point_mode(tmp_path):
    out, text = boot(tmp_path, STA + 'WIFI_MODE = "ap"\n', join_on=1)
    assert out["WIFI"] == "ap", text
    log = out["LOG"]
    assert "connect" not in log  # an AP-only board never tries the router
    assert "ap active True | ap config essid=board-ap,password=longenough" in log, log
    assert "boot: access point board-ap up, 192.168.4.1" in text


def test_sta_then_ap_fallback(tmp_path):
    out, text = boot(tmp_path, STA + 'WIFI_MODE = "sta+ap"\nWIFI_RETRIES = 2\n', join_on=0)
    assert out["WIFI"] == "ap", text
    log = out["LOG"]
    assert log.index("connect home pw #2") < log.index("sta active False") < log.index("ap active True")
    # And when the router answers, no access point.
    out2, _ = boot(tmp_path / "again", STA + 'WIFI_MODE = "sta+ap"\n', join_on=1)
    assert out2["WIFI"] == "sta" and "ap active" not in out2["LOG"]


def test_open_access_point_and_short_password(tmp_path):
    out, text = boot(tmp_path, STA + 'WIFI_MODE = "ap"\nAP_PASSWORD = ""\n')
    assert out["WIFI"] == "ap" and "ap config essid=board-ap |" in out["LOG"] + " |", text
    out, text = boot(tmp_path / "short", STA + 'WIFI_MODE = "ap"\nAP_PASSWORD = "short"\n')
    assert out["WIFI"] == "None", text
    assert "AP_PASSWORD under 8 characters" in text and "ap config" not in out["LOG"]


def test_no_secrets_and_no_network_module(tmp_path):
    out, text = boot(tmp_path, None)
    assert out["WIFI"] == "None" and "boot: no secrets.py, Wi-Fi stays off" in text
    out, text = boot(tmp_path / "unix", STA, network=False)
    assert out["WIFI"] == "None" and "boot:" not in text  # the Unix port: silent


@pytest.mark.parametrize("path", ["firmware/lib/umqtt_full"])
def test_library_has_no_board_imports(path):
    # network and machine stay in boot.py/main.py: the library runs anywhere.
    bad = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, path)):
        for f in files:
            if f.endswith(".py"):
                for n, line in enumerate(open(os.path.join(dirpath, f)), 1):
                    s = line.strip()
                    if s.startswith(("import network", "import machine", "from machine",
                                     "from network")):
                        bad.append("%s:%d %s" % (f, n, s))
    assert not bad, bad
