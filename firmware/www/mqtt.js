// A tiny MQTT 3.1.1 client over WebSocket for the dashboard: CONNECT,
// SUBSCRIBE, PUBLISH at QoS 0/1 both ways (QoS 2 received is completed),
// PINGREQ. Plain JavaScript, no dependencies, no build step.
"use strict";
const enc = new TextEncoder();
const str = s => { const b = enc.encode(s); return [b.length >> 8, b.length & 255, ...b]; };

class MQTT {
  constructor(url, o = {}) {
    this.url = url;
    this.id = o.clientId || "dash-" + Math.random().toString(16).slice(2, 10);
    this.ka = o.keepalive || 30;
    this.pid = 0;
    this.acks = {};
    this.buf = new Uint8Array(0);
    this.onconnect = this.onclose = this.onmessage = () => {};
  }

  connect() {
    const ws = this.ws = new WebSocket(this.url, "mqtt");
    ws.binaryType = "arraybuffer";
    ws.onopen = () => this.send(1, 0, [...str("MQTT"), 4, 2, this.ka >> 8, this.ka & 255, ...str(this.id)]);
    ws.onmessage = e => this.feed(new Uint8Array(e.data));
    ws.onclose = () => { clearInterval(this.timer); this.buf = new Uint8Array(0); this.onclose(); };
  }

  close() { if (this.ws) this.ws.close(); }

  send(type, flags, body) {
    const h = [type << 4 | flags];
    let n = body.length;
    do { const b = n & 127; n >>= 7; h.push(n ? b | 128 : b); } while (n);
    const p = new Uint8Array(h.length + body.length);
    p.set(h);
    p.set(body, h.length);
    this.ws.send(p);
  }

  next() { this.pid = this.pid % 65535 + 1; return this.pid; }

  feed(d) {
    // Packets may span frames or share one: keep the tail for the next frame.
    const a = new Uint8Array(this.buf.length + d.length);
    a.set(this.buf);
    a.set(d, this.buf.length);
    let o = 0;
    while (a.length - o >= 2) {
      let n = 0, m = 1, i = o + 1, b;
      do { if (i >= a.length) { this.buf = a.slice(o); return; } b = a[i++]; n += (b & 127) * m; m *= 128; } while (b & 128);
      if (i + n > a.length) break;
      this.handle(a[o] >> 4, a[o] & 15, a.subarray(i, i + n));
      o = i + n;
    }
    this.buf = a.slice(o);
  }

  handle(t, f, b) {
    const id = b.length >= 2 ? b[0] << 8 | b[1] : 0;
    if (t === 2) {  // CONNACK
      if (b[1]) { this.ws.close(); return; }
      this.timer = setInterval(() => this.send(12, 0, []), this.ka * 500);
      this.onconnect();
    } else if (t === 3) {  // PUBLISH
      const q = f >> 1 & 3, tl = id;
      let p = 2 + tl;
      const topic = new TextDecoder().decode(b.subarray(2, p));
      if (q) { const pid = b[p] << 8 | b[p + 1]; p += 2; this.send(q === 1 ? 4 : 5, 0, [pid >> 8, pid & 255]); }
      this.onmessage(topic, b.subarray(p), !!(f & 1));
    } else if (t === 6) {  // PUBREL
      this.send(7, 0, [b[0], b[1]]);
    } else if (t === 4 || t === 9 || t === 11) {  // PUBACK, SUBACK, UNSUBACK
      const r = this.acks[id];
      delete this.acks[id];
      if (r) r(b.subarray(2));
    }
  }

  ack(id) { return new Promise(r => { this.acks[id] = r; }); }

  subscribe(filter, qos = 0) {
    const id = this.next();
    this.send(8, 2, [id >> 8, id & 255, ...str(filter), qos]);
    return this.ack(id);
  }

  publish(topic, payload, qos = 0, retain = false) {
    const body = str(topic);
    let id = 0;
    if (qos) { id = this.next(); body.push(id >> 8, id & 255); }
    body.push(...(typeof payload === "string" ? enc.encode(payload) : payload));
    this.send(3, Math.min(qos, 1) << 1 | (retain ? 1 : 0), body);
    return qos ? this.ack(id) : Promise.resolve();
  }
}
