# Broker settings: defaults sized for a board, a JSON config file or a dict
# over them, a one-line-per-event logger, and users/ACL rules (mosquitto-style
# acl_file syntax or a JSON list). Everything here runs at start or at
# CONNECT time, never per message.
import sys

# Defaults are small (about 37 KB of tables on the 64-bit Unix port); a board
# running .mpy or frozen modules has room to raise them (boards/*/board.json;
# docs/broker.md has the cost of each).
DEFAULTS = {
    "max_clients": 5,        # connection slots (each: rx + tx buffer of max_packet)
    "max_sessions": 7,       # session slots, online + offline persistent ones
    "max_subs": 32,          # subscription table rows, all sessions together
    "max_topic": 64,         # longest topic name / filter ($share/g/ prefix included)
    "max_packet": 512,      # largest packet in or out; rx and tx buffer size
    "msg_slots": 14,         # stored-message pool (queued, in-flight, retained)
    "msg_size": 0,           # bytes per pool slot (topic+props+payload); 0 = max_packet
    "retained": 12,          # retained message slots
    "queue_depth": 4,        # queued messages per session
    "max_inflight": 8,       # outgoing QoS 1/2 in flight per session; inbound QoS 2 too
    "topic_alias_max": 4,    # topic aliases per connection, each direction (v5)
    "max_keepalive": 0,      # server keepalive cap in s (0: accept the client's)
    "session_expiry_max": 86400,  # cap on a persistent session's lifetime in s
    "slow_timeout": 10,      # s a subscriber with a full queue may go without acking before it is cut
    "connect_timeout": 10,   # s a new connection may take to send CONNECT
    "pending": 2,            # extra slots used only to answer connections past max_clients
    "sys_interval": 0,       # s between $SYS/broker/... publishes (0: off)
    "log_level": "info",     # debug, info, warn, error, none
    "response_info": "",     # v5 Response Information on request, %c = client id (e.g. "reply/%c/")
    "allow_anonymous": True,
    "users": {},             # {name: password}
    "acl": None,             # list of rules, see docs/broker.md
    "acl_file": None,        # mosquitto acl_file syntax
    "bridge": None,          # upstream broker link(s), see docs/bridge.md
    "ws_port": 0,            # MQTT over WebSocket + the dashboard over HTTP on this port (0: off)
    "http_root": None,       # dashboard files (ws_port only); None: www/ beside lib/
    "persist_file": None,    # file for retained messages and persistent sessions (None: RAM only)
    "persist_interval": 5,   # s from a change to the file write (0: before each QoS 1/2 ack)
}

LEVELS = {"debug": 0, "info": 1, "warn": 2, "error": 3, "none": 9}

# Access bits for ACL rules.
READ = 1
WRITE = 2
DENY = 4
_ACCESS = {"read": READ, "write": WRITE, "readwrite": READ | WRITE, "deny": DENY}


class Log:
    def __init__(self, level="info"):
        self.level = LEVELS.get(level, 1)

    def log(self, lvl, msg):
        if lvl >= self.level:
            print("broker %s %s" % (("DEBUG", "INFO", "WARN", "ERROR")[lvl], msg))

    def debug(self, msg):
        if self.level <= 0:
            self.log(0, msg)

    def info(self, msg):
        self.log(1, msg)

    def warn(self, msg):
        self.log(2, msg)

    def error(self, msg):
        self.log(3, msg)


def load(cfg=None):
    # cfg: None, a dict, or a path to a JSON file. Unknown keys are an error
    # so a typo does not silently leave a default in place.
    if isinstance(cfg, str):
        import json
        with open(cfg) as f:
            cfg = json.load(f)
    c = dict(DEFAULTS)
    for k in cfg or ():
        if k not in DEFAULTS:
            raise ValueError("unknown broker setting %r" % k)
        c[k] = cfg[k]
    if not c["msg_size"]:
        c["msg_size"] = c["max_packet"]
    if c["max_sessions"] < c["max_clients"]:
        c["max_sessions"] = c["max_clients"]
    if c["max_packet"] > 65535 or c["msg_size"] > 65535:
        raise ValueError("max_packet and msg_size are at most 65535")
    rules = []
    if c["acl"] is not None:
        for r in c["acl"]:
            rules.append(_rule(r.get("user"), r.get("pattern", False), r.get("access", "readwrite"),
                               r["topic"]))
    if c["acl_file"]:
        with open(c["acl_file"]) as f:
            rules += parse_acl(f.read())
    c["acl_rules"] = rules if (c["acl"] is not None or c["acl_file"]) else None
    return c


def _rule(user, pattern, access, topic):
    if access not in _ACCESS:
        raise ValueError("ACL access %r" % access)
    return (user, pattern, _ACCESS[access], topic)


def parse_acl(text):
    # mosquitto acl_file: "user NAME" starts a block, "topic [read|write|
    # readwrite|deny] T" applies to it (to anonymous clients before any user
    # line), "pattern [access] T" applies to everyone with %c/%u substituted.
    rules = []
    user = None
    for line in text.split("\n"):
        line = line.strip()
        if not line or line[0] == "#":
            continue
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word == "user":
            user = rest
            continue
        if word not in ("topic", "pattern"):
            raise ValueError("acl line %r" % line)
        acc, _, t = rest.partition(" ")
        if acc in _ACCESS:
            t = t.strip()
        else:
            acc, t = "readwrite", rest
        rules.append(_rule(None if word == "pattern" else (user or ""), word == "pattern", acc, t))
    return rules


def acl_for(rules, user, client_id):
    # The rules that apply to one connection, expanded once at CONNECT:
    # a list of (access, filter bytes). None means no ACL (all allowed).
    if rules is None:
        return None
    out = []
    for ruser, pattern, acc, topic in rules:
        if pattern:
            if "%u" in topic and user is None:
                continue
            topic = topic.replace("%c", client_id).replace("%u", user or "")
        elif ruser != (user or ""):
            continue
        out.append((acc, topic.encode()))
    return out


def parse_args(argv):
    # --host H --port P [--config FILE] [--ws-port P]
    host, port, cfg, ws = "0.0.0.0", 1883, None, None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--host", "--port", "--config", "--ws-port") and i + 1 < len(argv):
            v = argv[i + 1]
            if a == "--host":
                host = v
            elif a == "--port":
                port = int(v)
            elif a == "--ws-port":
                ws = int(v)
            else:
                cfg = v
            i += 2
        else:
            sys.stderr.write("usage: micropython -m umqtt_full.broker --host H --port P [--config FILE]"
                             " [--ws-port P]\n")
            raise SystemExit(2)
    if ws is not None:
        # The file's settings with --ws-port over them.
        if isinstance(cfg, str):
            import json
            with open(cfg) as f:
                cfg = json.load(f)
        cfg = dict(cfg or {})
        cfg["ws_port"] = ws
    return host, port, cfg
