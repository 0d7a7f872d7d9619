# Drop-in parity with micropython-lib's umqtt.simple / umqtt.robust, checked
# against signatures written here (nothing is fetched): the source is parsed
# with ast on CPython, and the same names are checked on MicroPython.
import ast
import os

from test_client_helpers import ROOT, run_mpy, results, mosq  # noqa: F401

LIB = os.path.join(ROOT, "firmware", "lib", "umqtt_full")

# umqtt.simple 1.4 public API: name -> positional parameters with defaults.
SIMPLE = {
    "__init__": ["client_id", "server", "port=0", "user=None", "password=None", "keepalive=0",
                 "ssl=None", "ssl_params={}"],
    "set_callback": ["f"],
    "set_last_will": ["topic", "msg", "retain=False", "qos=0"],
    "connect": ["clean_session=True", "timeout=None"],
    "disconnect": [],
    "ping": [],
    "publish": ["topic", "msg", "retain=False", "qos=0"],
    "subscribe": ["topic", "qos=0"],
    "wait_msg": [],
    "check_msg": [],
}
ROBUST = ["delay", "log", "reconnect"]
ATTRS = ["client_id", "sock", "server", "port", "ssl", "ssl_params", "pid", "cb", "user", "pswd",
         "keepalive", "lw_topic", "lw_msg", "lw_qos", "lw_retain"]


def _methods():
    found = {}
    for mod in ("core.py", "client.py"):  # Core, then MQTTClient(Core) overriding
        tree = ast.parse(open(os.path.join(LIB, mod)).read())
        for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
            if cls.name not in ("Core", "MQTTClient"):
                continue
            for f in cls.body:
                if isinstance(f, ast.FunctionDef):
                    a = f.args
                    names = [x.arg for x in a.args][1:]
                    defaults = [ast.unparse(d) for d in a.defaults]
                    params = []
                    for i, n in enumerate(names):
                        j = i - (len(names) - len(defaults))
                        params.append(n if j < 0 else "%s=%s" % (n, defaults[j]))
                    found[f.name] = params
    return found


def test_signatures_extend_umqtt_simple():
    found = _methods()
    for name, params in SIMPLE.items():
        assert name in found, name
        # Same leading positional parameters and defaults; extras only after them.
        assert found[name][:len(params)] == params, (name, found[name])
        for extra in found[name][len(params):]:
            assert "=" in extra, (name, extra)  # added parameters are optional
    for name in ROBUST + ["unsubscribe"]:
        assert name in found


def test_runtime_parity_on_micropython(mosq):
    out = run_mpy("""
from umqtt_full import MQTTClient, MQTTException
import umqtt_full.robust as R
c = MQTTClient("api", "127.0.0.1", %d)
print("R missing", [n for n in %r if not hasattr(c, n)])
print("R attrs", [n for n in %r if not hasattr(c, n)])
print("R robust", R.MQTTClient("r", "h").robust, c.robust, R.MQTTClient.DELAY)
# positional calls exactly as umqtt.simple code makes them
c.set_callback(lambda t, m: None)
c.set_last_will(b"api/will", b"bye", False, 0)
print("R sp", c.connect(True))
c.subscribe(b"api/x", 1)
c.publish(b"api/x", b"m", False, 0)
c.wait_msg()
c.ping()
c.check_msg()
c.disconnect()
print("R exc", issubclass(MQTTException, Exception), MQTTException(5).args[0])
""" % (mosq.port, list(SIMPLE) + ROBUST + ["unsubscribe"], ATTRS))
    r = results(out)
    assert r == {"missing": "[]", "attrs": "[]", "robust": "True False 2", "sp": "0",
                 "exc": "True 5"}
