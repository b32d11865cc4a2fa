// Runs the browser example of docs/websocket.md, as written there, in headless Chromium
// against a real `hearth`: connect, see the initial sync, send a message from the page, see
// the response by id and the message pushed back.
//
//   node tests/clients/browser_websocket.mjs target/debug/hearth
//
// Needs playwright-core (NODE_PATH or a local node_modules) and Chromium (CHROMIUM, default
// /usr/bin/chromium); .ci/run installs both.

import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");
const binary = process.argv[2];
const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..");

const check = (condition, what, detail = "") => {
  if (!condition) throw new Error(`${what}: ${detail}`);
  console.log(`ok - ${what}`);
};

const port = await new Promise(resolve => {
  const server = net.createServer().listen(0, "127.0.0.1", () => {
    const { port } = server.address();
    server.close(() => resolve(port));
  });
});
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "hearth-browser-"));
const hearth = spawn(binary, ["serve"], {
  env: { ...process.env, HEARTH_LISTEN: `127.0.0.1:${port}`, HEARTH_DATA_DIR: dataDir, HEARTH_LOG: "warn" },
  stdio: "inherit",
});
const base = `http://127.0.0.1:${port}`;
let browser;
try {
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${base}/health`)).ok) break;
    } catch {}
    if (i > 300) throw new Error("hearth did not become healthy");
    await new Promise(r => setTimeout(r, 100));
  }
  const json = { "content-type": "application/json" };
  const registered = await (await fetch(`${base}/_matrix/client/v3/register`, {
    method: "POST", headers: json,
    body: JSON.stringify({ username: "web", password: "browser test", auth: { type: "m.login.dummy" } }),
  })).json();
  const token = registered.access_token;
  const room = (await (await fetch(`${base}/_matrix/client/v3/createRoom`, {
    method: "POST", headers: { ...json, authorization: `Bearer ${token}` }, body: "{}",
  })).json()).room_id;

  const doc = fs.readFileSync(path.join(repo, "docs", "websocket.md"), "utf8");
  const html = doc.split("```html\n")[1].split("```")[0];
  const page_file = path.join(dataDir, "example.html");
  fs.writeFileSync(page_file, html);

  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
  const page = await browser.newPage();
  await page.goto(`file://${page_file}`);
  await page.fill("#base", base);
  await page.fill("#token", token);
  await page.fill("#room", room);
  await page.click("#connect");
  const logHas = text => page.waitForFunction(t => document.getElementById("log").textContent.includes(t), text, { timeout: 10000 });
  await logHas("connected");
  check(true, "the page connects over the WebSocket");
  await page.fill("#text", "hello from the browser");
  await page.click("#send");
  await logHas("response web-");
  const log = await page.textContent("#log");
  check(/response web-\S+: \{"event_id":"\$/.test(log), "the send request is answered by id with an event ID", log);
  await logHas(`${room} @web:localhost: hello from the browser`);
  check(true, "the message is pushed back to the page");
} finally {
  if (browser) await browser.close();
  hearth.kill("SIGTERM");
  const code = await new Promise(resolve => hearth.on("exit", resolve));
  fs.rmSync(dataDir, { recursive: true, force: true });
  check(code === 0, `hearth exited cleanly on SIGTERM (code ${code})`);
}
