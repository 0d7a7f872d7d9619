# Starts the roles this board is configured for. settings.json is made from
# boards/<board>/board.json by tools/build_mpy.py. Relative path on purpose:
# the cwd is the filesystem root on a board and on the virtual board alike.
import json


def _settings():
    try:
        with open("settings.json") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print("main: no usable settings.json (%s), broker with defaults" % e)
        return {"roles": ["broker"]}


def _led(pin):
    # Lit LED = application started; handy on a board without a console.
    if pin is None:
        return
    try:
        from machine import Pin
        Pin(pin, Pin.OUT).on()
    except Exception as e:
        print("main: no LED on %r (%s)" % (pin, e))


def _broker(s):
    try:
        from umqtt_full.broker import Broker
    except ImportError as e:
        print("main: umqtt_full.broker not available (%s), broker not started" % e)
        return
    b = Broker(s.get("broker"))
    b.listen(s.get("broker_host", "0.0.0.0"), s.get("broker_port", 1883))
    try:
        b.serve_forever()
    finally:
        b.close()


def main():
    s = _settings()
    _led(s.get("led_pin"))
    for role in s.get("roles", ()):
        if role == "broker":
            _broker(s)  # serves until interrupted
        else:
            print("main: unknown role %r, skipped" % role)


main()
