// Shared by the matrix-js-sdk tests: loading the SDK installed by .ci/run, TAP-style checks,
// polling, registering users and starting clients, and running a real `hearth` binary (a free
// loopback port, a fresh data directory, a clean SIGTERM at the end).
// HEARTH_TEST_BASE_URL=http://127.0.0.1:PORT points a test at a
// server that is already running instead.

import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..");
const modules = path.resolve(process.env.JS_E2EE_MODULES ?? path.join(repo, "target", "js-e2ee", "node_modules"));

/** Imports a module of matrix-js-sdk's `lib` directory (e.g. "index.js"). */
export const loadSdk = file => import(pathToFileURL(path.join(modules, "matrix-js-sdk", "lib", file)).href);

// The SDK logs everything down to debug level on the console, including expected failures;
// keep only its errors (JS_E2EE_LOG=1 keeps all). The tests' own lines go to stdout directly.
if (!process.env.JS_E2EE_LOG) for (const level of ["log", "info", "debug", "trace", "warn"]) console[level] = () => {};

export const say = line => process.stdout.write(`${line}\n`);

export const WAIT_MS = 20000;

export const check = (condition, what, detail = "") => {
  if (!condition) throw new Error(`${what}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  say(`ok - ${what}`);
};

/** Polls `probe` until it returns something truthy (returned) or `ms` have passed (throws). */
export async function waitFor(what, probe, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms / 1000} s`);
    await new Promise(resolve => setTimeout(resolve, 100));
  }
}

const freePort = () =>
  new Promise(resolve => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });

/**
 * Starts `process.argv[2]` (a hearth binary) with `env` added, or uses HEARTH_TEST_BASE_URL.
 * Returns the base URL and `stop()`, which sends SIGTERM and checks the exit code.
 */
export async function startServer(script, env = {}) {
  if (process.env.HEARTH_TEST_BASE_URL) return { base: process.env.HEARTH_TEST_BASE_URL.replace(/\/$/, ""), stop: async () => {} };
  const binary = process.argv[2];
  if (!binary) throw new Error(`usage: node tests/clients/${script} path/to/hearth (or set HEARTH_TEST_BASE_URL)`);
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "hearth-js-"));
  const hearth = spawn(binary, ["serve"], {
    env: { ...process.env, HEARTH_LISTEN: `127.0.0.1:${port}`, HEARTH_DATA_DIR: dataDir, HEARTH_LOG: "warn", ...env },
    stdio: "inherit",
  });
  const exited = new Promise(resolve => hearth.on("exit", code => resolve(code)));
  const base = `http://127.0.0.1:${port}`;
  await waitFor("hearth becomes healthy", async () => {
    try {
      return (await fetch(`${base}/health`)).ok;
    } catch {
      return false;
    }
  }, 30000);
  return {
    base,
    stop: async () => {
      hearth.kill("SIGTERM");
      const code = await exited;
      fs.rmSync(dataDir, { recursive: true, force: true });
      check(code === 0, `hearth exited cleanly on SIGTERM (code ${code})`);
    },
  };
}

/** Registers `username` on `base` with the dummy stage; returns the credentials. */
export async function register(base, username, password = "a long test password") {
  const response = await fetch(`${base}/_matrix/client/v3/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password, auth: { type: "m.login.dummy" } }),
  });
  const json = await response.json();
  if (!response.ok) throw new Error(`register ${username}: ${JSON.stringify(json)}`);
  return json;
}

/**
 * Starts a matrix-js-sdk client for `credentials` with `startOptions` and waits for its first
 * sync (rejects if sync fails).
 */
export async function startSession(sdk, base, credentials, label, startOptions) {
  const client = sdk.createClient({
    baseUrl: base,
    userId: credentials.user_id,
    deviceId: credentials.device_id,
    accessToken: credentials.access_token,
  });
  const prepared = new Promise((resolve, reject) => {
    client.on(sdk.ClientEvent.Sync, (state, _previous, data) => {
      if (state === "PREPARED") resolve();
      if (state === "ERROR") reject(new Error(`${label}: sync failed: ${data?.error}`));
    });
  });
  await client.startClient(startOptions);
  await prepared;
  return client;
}
