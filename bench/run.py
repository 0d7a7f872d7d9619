"""Client benchmark: umqtt_full.MQTTClient against micropython-lib's umqtt.simple
on the MicroPython Unix port, both talking to a private mosquitto.

Fetches umqtt.simple from PyPI into bench/.scratch/ (never committed), runs
bench/client_bench.py for each client, RUNS times alternating, prints median and
min-max per metric with the ratio ours/umqtt.simple and the issue's targets, and
writes bench/results/client.md. Targets are informational: exit 0 either way.
"""

import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.support.harness import Mosquitto, find_mosquitto  # noqa: E402

SCRATCH = REPO / "bench" / ".scratch"
RESULTS = REPO / "bench" / "results"
MICROPYTHON = REPO / ".venv" / "bin" / "micropython"
SCRIPT = REPO / "bench" / "client_bench.py"
HEAP = "128K"
RUNS = 3
PYPI_JSON = "https://pypi.org/pypi/micropython-umqtt.simple/json"

# Message counts per system: umqtt.simple's blocking QoS 1 runs at ~22/s on
# loopback (Nagle + delayed ACK: it writes a packet in several pieces), so it
# gets few messages.
COUNTS = {
    "simple": dict(n0=20000, n1=50, n1p=0, nrx=20000, nalloc=100),
    "full": dict(n0=20000, n1=2000, n1p=5000, nrx=20000, nalloc=100),
}
# (key, label, unit, target ratio ours/simple or None, higher is better)
METRICS = [
    ("qos0", "QoS 0 publish", "msg/s", 2.0, True),
    ("qos1", "QoS 1 publish (blocking)", "msg/s", 50.0, True),
    ("qos1p", "QoS 1 publish (pipelined, wait=False + flush)", "msg/s", None, True),
    ("recv", "Receive (QoS 0 flood)", "msg/s", 2.0, True),
    ("alloc", "Heap per QoS 0 publish", "bytes", None, False),
]
NAMES = {"simple": "umqtt.simple", "full": "umqtt_full"}


def fetch_umqtt_simple():
    """bench/.scratch/umqtt_simple/umqtt/simple.py from the PyPI sdist."""
    dest = SCRATCH / "umqtt_simple"
    target = dest / "umqtt" / "simple.py"
    if target.exists():
        return dest, target.read_text().count("\n")
    SCRATCH.mkdir(parents=True, exist_ok=True)
    (SCRATCH / ".gitignore").write_text("*\n")
    try:
        meta = json.load(urllib.request.urlopen(PYPI_JSON, timeout=20))
        url = next(u["url"] for u in meta["urls"] if u["url"].endswith(".tar.gz"))
        data = urllib.request.urlopen(url, timeout=30).read()
    except (OSError, StopIteration, ValueError) as e:
        sys.exit("bench: cannot fetch micropython-umqtt.simple from PyPI (%s): %s\n"
                 "bench: needs network once; afterwards %s is reused"
                 % (PYPI_JSON, e, target))
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
    except tarfile.TarError as e:
        sys.exit("bench: bad sdist %s: %s" % (url, e))
    with tf:
        member = next((m for m in tf.getmembers() if m.name.endswith("umqtt/simple.py")), None)
        if member is None:
            sys.exit("bench: umqtt/simple.py not found in %s" % url)
        src = tf.extractfile(member).read()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(src)
    print("bench: umqtt.simple %s from %s" % (meta["info"]["version"], url))
    return dest, src.count(b"\n")


def flood(host, port, topic, n, stop):
    """Publish QoS 0 messages to topic until n are out or stop is set."""
    import paho.mqtt.client as mqtt
    cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-flood")
    cl.connect(host, port, 60)
    cl.loop_start()
    payload = b"y" * 64
    sent = 0
    try:
        while sent < n and not stop.is_set():
            info = cl.publish(topic, payload, qos=0)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                time.sleep(0.001)
                continue
            sent += 1
            if sent % 500 == 0:
                time.sleep(0)  # let paho's network thread drain
    finally:
        # Let queued messages go out before closing.
        deadline = time.monotonic() + 10
        while cl.want_write() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        cl.disconnect()
        cl.loop_stop()
    return sent


def run_one(which, broker, lib_path, timeout=90):
    counts = COUNTS[which]
    topic = "bench/%s/%d" % (which, os.getpid())
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join(
        [".frozen", str(REPO / "firmware" / "lib"), str(lib_path)])
    argv = [str(MICROPYTHON), "-X", "heapsize=" + HEAP, str(SCRIPT), which, broker.host,
            str(broker.port), topic] + [str(counts[k]) for k in ("n0", "n1", "n1p", "nrx", "nalloc")]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            cwd=REPO, text=True, bufsize=1, start_new_session=True)
    res, out = {}, []
    stop = threading.Event()
    flooder = None
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        for line in proc.stdout:
            out.append(line)
            parts = line.split()
            if parts[:1] == ["RESULT"]:
                res[parts[1]] = float(parts[2])
            elif parts[:1] == ["READY"]:
                # The client is not reading: flood, then tell it to start.
                flooder = threading.Thread(target=flood, args=(
                    broker.host, broker.port, topic + "/rx", counts["nrx"], stop))
                flooder.start()
                flooder.join(60)
                time.sleep(0.3)  # mosquitto has routed the last ones
                proc.stdin.write("GO\n")
                proc.stdin.flush()
        rc = proc.wait()
    finally:
        killer.cancel()
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if flooder:
            flooder.join(15)
    if rc != 0 or "recv" not in res:
        sys.exit("bench: %s run failed (rc %s):\n%s" % (which, rc, "".join(out[-30:])))
    return res


def fmt(v, unit):
    if unit == "bytes":
        return "%.1f" % v
    return "%.0f" % v if v >= 100 else "%.1f" % v


def main():
    t_start = time.monotonic()
    if not MICROPYTHON.exists():
        sys.exit("bench: %s missing: run `make setup`" % MICROPYTHON)
    if not find_mosquitto():
        sys.exit("bench: mosquitto not found: run `make setup`")
    lib_path, _ = fetch_umqtt_simple()
    data = {"simple": [], "full": []}
    with tempfile.TemporaryDirectory(prefix="bench-mosq-") as tmp:
        # Unlimited queue so a QoS 0 flood to a slow subscriber is not dropped.
        broker = Mosquitto(tmp, extra_conf="max_queued_messages 0\nmax_inflight_messages 20\n")
        broker.start()
        try:
            total = RUNS * 2
            k = 0
            for r in range(RUNS):
                order = ("simple", "full") if r % 2 == 0 else ("full", "simple")
                for which in order:
                    k += 1
                    print("bench: run %d/%d %-12s ..." % (k, total, NAMES[which]),
                          end="", flush=True)
                    t = time.monotonic()
                    res = run_one(which, broker, lib_path)
                    data[which].append(res)
                    print(" %.1fs  %s" % (time.monotonic() - t, "  ".join(
                        "%s=%s" % (key, fmt(v, "bytes" if key == "alloc" else "msg/s"))
                        for key, v in sorted(res.items()))), flush=True)
        finally:
            broker.stop()

    rows = []
    for key, label, unit, target, higher in METRICS:
        cells = []
        meds = {}
        for which in ("simple", "full"):
            vals = [d[key] for d in data[which] if key in d]
            if not vals:
                cells.append("n/a")
                continue
            meds[which] = statistics.median(vals)
            cells.append("%s (%s-%s)" % (fmt(meds[which], unit), fmt(min(vals), unit),
                                         fmt(max(vals), unit)))
        ratio, verdict = "n/a", ""
        if "simple" in meds and "full" in meds and meds["simple"] > 0:
            r = meds["full"] / meds["simple"]
            ratio = "%.2fx" % r
            if target is not None:
                verdict = "%s (>= %gx)" % ("PASS" if r >= target else "MISS", target)
        elif "full" in meds and not higher and "simple" in meds:
            ratio = "n/a"
        if key == "alloc" and meds.get("simple", 0) == 0 and "full" in meds:
            ratio = "n/a"
        rows.append((label, unit, cells[0], cells[1], ratio, verdict))

    head = ("Metric", "Unit", "umqtt.simple median (min-max)", "umqtt_full median (min-max)",
            "ours/simple", "Target")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)
    counts = "; ".join("%s: %s" % (NAMES[w], ", ".join("%s=%d" % kv for kv in c.items() if kv[1]))
                       for w, c in COUNTS.items())
    note = ("MicroPython Unix port (`-X heapsize=%s`), mosquitto on loopback, 64-byte payloads, "
            "%d runs alternating the two clients. Counts per run: %s. Ratios are of medians; "
            "targets from issue 6 are informational." % (HEAP, RUNS, counts))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "client.md"
    out.write_text("# Client benchmark\n\n%s\n\n%s\n\nGenerated %s by bench/run.py.\n"
                   % (note, table, time.strftime("%Y-%m-%d %H:%M:%S")))
    print()
    print(table)
    print()
    print("bench: wrote %s (%.0fs)" % (out.relative_to(REPO), time.monotonic() - t_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
