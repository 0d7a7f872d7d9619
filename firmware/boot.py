# Runs first on every boot. Brings Wi-Fi up so main.py and anyone on the REPL
# find the network ready; credentials come from /secrets.py, never from git
# (see boards/secrets.example.py).
def _wifi():
    try:
        import network
    except ImportError:
        return  # Unix port / virtual board: the host's network is already up
    try:
        import secrets
    except ImportError:
        print("boot: no secrets.py, Wi-Fi stays off")
        return
    import time

    if getattr(secrets, "HOSTNAME", None):
        network.hostname(secrets.HOSTNAME)
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    tries = getattr(secrets, "WIFI_RETRIES", 3)
    for attempt in range(1, tries + 1):
        if wlan.isconnected():
            break
        wlan.connect(secrets.WIFI_SSID, secrets.WIFI_PASSWORD)
        t0 = time.ticks_ms()
        while not wlan.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < 15000:
            time.sleep_ms(200)
        if not wlan.isconnected():
            print("boot: Wi-Fi attempt %d/%d failed, status %s" % (attempt, tries, wlan.status()))
            wlan.disconnect()
            time.sleep_ms(1000 * attempt)  # back off: the AP may still be booting
    if wlan.isconnected():
        print("boot: Wi-Fi up,", wlan.ifconfig()[0])
    else:
        print("boot: Wi-Fi down, continuing offline")


_wifi()
del _wifi
