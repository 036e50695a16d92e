// Opens report pages in a real headless Chromium over the DevTools protocol and fails unless
// each renders with no console error, no request beyond the page's own file, and every chart
// drawn (each SVG chart has at least one series path of non-zero length on screen). Saves a
// full-page PNG beside each page. Run by scripts/check-report-browser.sh:
//
//   node --experimental-websocket check-report-browser.mjs CHROMIUM PAGE.html...
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [chromium, ...pages] = process.argv.slice(2);
if (!chromium || pages.length === 0) {
  console.error("usage: check-report-browser.mjs CHROMIUM PAGE.html...");
  process.exit(2);
}
const profile = mkdtempSync(join(tmpdir(), "inferlab-chromium-"));
const browser = spawn(chromium, [
  "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
  "--disable-background-networking", "--disable-extensions", "--disable-sync",
  "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
  `--user-data-dir=${profile}`, "about:blank",
], { stdio: ["ignore", "ignore", "pipe"] });
// However this script ends (an exception included), no browser is left running.
process.on("exit", () => {
  try { browser.kill("SIGKILL"); } catch {}
});

const wsUrl = await new Promise((ok, fail) => {
  let err = "";
  const timer = setTimeout(() => fail(new Error(`Chromium did not start: ${err.slice(-800)}`)), 30000);
  browser.stderr.on("data", (d) => {
    err += d;
    const m = err.match(/DevTools listening on (ws:\/\/\S+)/);
    if (m) { clearTimeout(timer); ok(m[1]); }
  });
  browser.on("exit", (code) => fail(new Error(`Chromium exited (${code}): ${err.slice(-800)}`)));
});

const ws = new WebSocket(wsUrl);
await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = () => fail(new Error("no DevTools connection")); });
let nextId = 1;
const waiting = new Map();
const listeners = [];
ws.onmessage = (e) => {
  const msg = JSON.parse(e.data);
  if (msg.id && waiting.has(msg.id)) {
    const { ok, fail } = waiting.get(msg.id);
    waiting.delete(msg.id);
    msg.error ? fail(new Error(JSON.stringify(msg.error))) : ok(msg.result);
  } else if (msg.method) {
    for (const l of listeners) l(msg);
  }
};
const send = (method, params = {}, sessionId) => new Promise((ok, fail) => {
  const id = nextId++;
  waiting.set(id, { ok, fail });
  ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
});

let failures = 0;
for (const page of pages) {
  const url = pathToFileURL(resolve(page)).href;
  const { targetId } = await send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
  const requests = [], errors = [];
  let loaded;
  const done = new Promise((ok) => { loaded = ok; });
  listeners.length = 0;
  listeners.push((m) => {
    if (m.sessionId !== sessionId) return;
    if (m.method === "Network.requestWillBeSent") requests.push(m.params.request.url);
    if (m.method === "Runtime.consoleAPICalled" && ["error", "assert"].includes(m.params.type))
      errors.push(m.params.args.map((a) => a.value ?? a.description).join(" "));
    if (m.method === "Runtime.exceptionThrown") errors.push(m.params.exceptionDetails.text);
    if (m.method === "Log.entryAdded" && m.params.entry.level === "error") errors.push(m.params.entry.text);
    if (m.method === "Page.loadEventFired") loaded();
  });
  for (const domain of ["Network", "Runtime", "Log", "Page"]) await send(`${domain}.enable`, {}, sessionId);
  await send("Emulation.setDeviceMetricsOverride", { width: 1400, height: 900, deviceScaleFactor: 1, mobile: false }, sessionId);
  await send("Page.navigate", { url }, sessionId);
  await Promise.race([done, new Promise((_, fail) => setTimeout(() => fail(new Error(`${page}: no load event`)), 30000))]);
  const { result } = await send("Runtime.evaluate", {
    returnByValue: true,
    expression: `[...document.querySelectorAll("svg.chart")].map((svg) => {
      const paths = [...svg.querySelectorAll("path.series")];
      const box = svg.getBoundingClientRect();
      return { title: svg.querySelector("title")?.textContent ?? "?",
               drawn: paths.filter((p) => p.getTotalLength() > 0 && p.getBoundingClientRect().width > 0).length,
               visible: box.width > 0 && box.height > 0 };
    })`,
  }, sessionId);
  const charts = result.value;
  const problems = [];
  if (charts.length === 0) problems.push("no chart");
  for (const c of charts) {
    if (!c.visible || c.drawn === 0) problems.push(`chart "${c.title}" has nothing drawn`);
  }
  for (const r of requests) if (r !== url && !r.startsWith("data:")) problems.push(`request to ${r}`);
  for (const e of errors) problems.push(`console error: ${e}`);
  const shot = await send("Page.captureScreenshot", { format: "png", captureBeyondViewport: true }, sessionId);
  const png = page.replace(/\.html$/, "") + ".png";
  writeFileSync(png, Buffer.from(shot.data, "base64"));
  await send("Target.closeTarget", { targetId });
  if (problems.length) {
    failures++;
    console.error(`${page}: ${problems.join("; ")}`);
  } else {
    console.log(`${page}: ${charts.length} charts drawn, ${charts.reduce((n, c) => n + c.drawn, 0)} series, no console error, no request beyond the page; screenshot ${png}`);
  }
}
ws.close();
const exited = new Promise((ok) => browser.on("exit", ok));
browser.kill();
await exited;
rmSync(profile, { recursive: true, force: true, maxRetries: 5 });
process.exit(failures ? 1 : 0);
