// Headless Chromium (Debian's, through playwright-core) loads the dashboard
// the broker serves, sees a value a TCP client published, publishes from the
// page's form and keeps a screenshot. Driven by tests/host/test_ws.py.
// argv: pageURL expectTopic expectValue pubTopic pubPayload screenshot.png userDataDir
// stdout: JSON lines: {"ev": "ready"} once connected (then the test publishes),
// {"ev": "done", ...} with the topic tree as the page shows it; then a line
// "lost?" on stdin (after the test stopped the broker) answers {"ev": "lost",
// status} once the page's status leaves "connected"; {"ev": "error", ...} on
// failure.
"use strict";
const {chromium} = require("playwright-core");
const readline = require("readline");

const [url, expTopic, expValue, pubTopic, pubPayload, shot, profile] = process.argv.slice(2);
const out = o => process.stdout.write(JSON.stringify(o) + "\n");

async function main() {
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run"],
    viewport: {width: 900, height: 520},
  });
  try {
    const page = ctx.pages()[0] || await ctx.newPage();
    const requests = [];
    page.on("request", r => requests.push(r.url()));
    const errors = [];
    page.on("pageerror", e => errors.push(String(e)));
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById("st").textContent === "connected", null, {timeout: 10000});
    out({ev: "ready"});
    const sel = `li[data-topic="${expTopic}"] > .v`;
    await page.waitForFunction(([s, v]) => { const e = document.querySelector(s); return e && e.textContent === v; },
                               [sel, expValue], {timeout: 10000});
    const seen = await page.textContent(sel);
    await page.fill("#pt", pubTopic);
    await page.fill("#pp", pubPayload);
    await page.selectOption("#pq", "1");
    await page.click("#pb");
    await page.waitForFunction(() => /acked/.test(document.getElementById("log").textContent), null, {timeout: 10000});
    await page.screenshot({path: shot, fullPage: true});
    const tree = await page.evaluate(() => {
      const t = {};
      for (const li of document.querySelectorAll("li[data-topic]")) {
        const v = li.querySelector(":scope > .v");
        if (v) t[li.dataset.topic] = v.textContent;
      }
      return t;
    });
    out({ev: "done", seen, status: await page.textContent("#st"), requests, errors, tree,
         count: await page.textContent("#cnt")});
    for await (const line of lines) {
      if (line.trim() !== "lost?") continue;
      await page.waitForFunction(() => document.getElementById("st").textContent !== "connected", null,
                                 {timeout: 15000});
      out({ev: "lost", status: await page.textContent("#st")});
      break;
    }
  } finally {
    await ctx.close();
  }
}

const lines = readline.createInterface({input: process.stdin});
main().then(() => process.exit(0), e => { out({ev: "error", message: String(e && e.stack || e)}); process.exit(1); });
