# RAM of a connected client (run by bench/run.py on the Unix port, from .mpy
# builds as a board runs them). usage: micropython client_ram.py simple|full HOST PORT
# Prints "RESULT name bytes": import (code and module objects), client (the
# connected MQTTClient: object, buffers, socket), total; and "MODULES a b c"
# (the modules the import loaded, for the .mpy size figure).
import sys
import gc

which, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
before = set(sys.modules)
gc.collect()
f0 = gc.mem_free()
if which == "simple":
    from umqtt.simple import MQTTClient
else:
    from umqtt_full import MQTTClient
gc.collect()
f1 = gc.mem_free()
c = MQTTClient(b"bench-ram-" + which.encode(), host, port=port, keepalive=60)
c.connect()
gc.collect()
f2 = gc.mem_free()
print("RESULT ram_import %d" % (f0 - f1))
print("RESULT ram_client %d" % (f1 - f2))
print("RESULT ram_total %d" % (f0 - f2))
print("MODULES " + " ".join(sorted(m for m in sys.modules if m not in before)))
c.disconnect()
