// MQTT.js over WebSocket, driven line by line by tests/host/test_ws.py.
// argv: URL [clientId] [protocolVersion 4|5]. stdin: JSON commands {"op": "sub"|"pub"|"end", ...};
// stdout: one JSON event per line (connect, suback, msg, puback, close, error).
"use strict";
const mqtt = require("mqtt");
const readline = require("readline");

const out = o => process.stdout.write(JSON.stringify(o) + "\n");
const c = mqtt.connect(process.argv[2], {
  clientId: process.argv[3] || "mqttjs-" + process.pid,
  protocolVersion: +(process.argv[4] || 4), reconnectPeriod: 0, connectTimeout: 5000, keepalive: 30,
});
c.on("connect", () => out({ev: "connect"}));
c.on("message", (topic, payload, p) => out({ev: "msg", topic, payload: payload.toString(), qos: p.qos, retain: p.retain}));
c.on("close", () => out({ev: "close"}));
c.on("error", e => out({ev: "error", message: String(e && e.message || e)}));

readline.createInterface({input: process.stdin}).on("line", line => {
  const m = JSON.parse(line);
  if (m.op === "sub") {
    c.subscribe(m.topic, {qos: m.qos || 0}, (err, granted) =>
      out(err ? {ev: "error", message: String(err)} : {ev: "suback", granted: granted.map(g => g.qos)}));
  } else if (m.op === "pub") {
    c.publish(m.topic, m.payload, {qos: m.qos || 0, retain: !!m.retain}, err =>
      out(err ? {ev: "error", message: String(err)} : {ev: "puback", topic: m.topic, qos: m.qos || 0}));
  } else if (m.op === "end") {
    c.end(false, () => { out({ev: "ended"}); process.exit(0); });
  }
}).on("close", () => c.end(true, () => process.exit(0)));
