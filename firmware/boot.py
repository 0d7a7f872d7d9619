# Runs first on every boot. Brings Wi-Fi up so main.py and anyone on the REPL
# find the network ready; credentials come from /secrets.py, never from git
# (see boards/secrets.example.py). WIFI_MODE:
#   "sta"     join WIFI_SSID (default)
#   "ap"      be an access point AP_SSID: phones join the board itself
#   "sta+ap"  join WIFI_SSID, and when that fails start the access point, so
#             the board stays reachable (dashboard, broker) without the router
def _sta(network, secrets, time):
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    tries = getattr(secrets, "WIFI_RETRIES", 3)
    wait_ms = getattr(secrets, "WIFI_WAIT_MS", 15000)
    for attempt in range(1, tries + 1):
        if wlan.isconnected():
            break
        wlan.connect(secrets.WIFI_SSID, secrets.WIFI_PASSWORD)
        t0 = time.ticks_ms()
        while not wlan.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < wait_ms:
            time.sleep_ms(200)
        if not wlan.isconnected():
            print("boot: Wi-Fi attempt %d/%d failed, status %s" % (attempt, tries, wlan.status()))
            wlan.disconnect()
            time.sleep_ms(min(1000 * attempt, wait_ms))  # back off: the AP may still be booting
    if wlan.isconnected():
        print("boot: Wi-Fi up,", wlan.ifconfig()[0])
        return True
    wlan.active(False)
    return False


def _ap(network, secrets):
    ap = network.WLAN(network.AP_IF)
    ap.active(True)
    pw = getattr(secrets, "AP_PASSWORD", "") or ""
    if pw and len(pw) < 8:
        print("boot: AP_PASSWORD under 8 characters (WPA2 needs 8), access point not started")
        ap.active(False)
        return False
    # essid/password are accepted by the ESP32 and the Pico W ports alike.
    if pw:
        ap.config(essid=secrets.AP_SSID, password=pw)
    else:
        ap.config(essid=secrets.AP_SSID)
    print("boot: access point %s up, %s" % (secrets.AP_SSID, ap.ifconfig()[0]))
    return True


def _wifi():
    try:
        import network
    except ImportError:
        return None  # Unix port / virtual board: the host's network is already up
    try:
        import secrets
    except ImportError:
        print("boot: no secrets.py, Wi-Fi stays off")
        return None
    import time

    if getattr(secrets, "HOSTNAME", None):
        network.hostname(secrets.HOSTNAME)
    mode = getattr(secrets, "WIFI_MODE", "sta")
    if mode not in ("sta", "ap", "sta+ap"):
        print("boot: unknown WIFI_MODE %r, using sta" % mode)
        mode = "sta"
    if mode != "ap" and _sta(network, secrets, time):
        return "sta"
    if mode != "sta" and getattr(secrets, "AP_SSID", None):
        if _ap(network, secrets):
            return "ap"
    print("boot: Wi-Fi down, continuing offline")
    return None


WIFI = _wifi()  # "sta", "ap" or None, for main.py and the REPL
del _wifi
