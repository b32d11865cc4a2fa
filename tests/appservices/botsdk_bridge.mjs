// A test bridge built on matrix-bot-sdk's appservice framework (npm `matrix-bot-sdk@0.8.0`)
// against a running Hearth.
//
// Writes a registration file (Synapse's YAML format), starts the `hearth` binary given as the
// first argument with it (a free loopback port, a fresh data directory, SQLite or the database
// in HEARTH_DATABASE_URL), and runs the SDK's `Appservice` (an express server on 127.0.0.1) and
// its `Intent`s against it: `begin()` (the bot registers or is in use), ghosts registered by
// `ensureRegistered()` and then masqueraded with the device their registration made (the
// unstable `org.matrix.msc3202.device_id`), joins, sending as a ghost with a massaged timestamp
// (`?ts=`), state as the bot, the real user's message, typing and read receipt in transactions
// (`room.message`, `ephemeral.event`, `room.join`), `query.user` and `query.room` creating a
// ghost and rooms on demand, ping (answered and failing), masquerading refused, MSC4190 devices.
// Finally it stops the server with SIGTERM and checks that it shuts down cleanly.
//
//   npm install --prefix target/as-js --save-exact matrix-bot-sdk@0.8.0
//   node tests/appservices/botsdk_bridge.mjs target/debug/hearth        (Node >= 22)
//
// BOTSDK_MODULES=dir/node_modules finds the SDK elsewhere; JS_E2EE_LOG=1 shows its logging.

import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import Module, { createRequire } from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";

import { check, register, say, waitFor } from "../clients/js_harness.mjs";

const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..");
const modules = path.resolve(process.env.BOTSDK_MODULES ?? path.join(repo, "target", "as-js", "node_modules"));
const WAIT = 15000;
const AS_ID = "botsdktest";
const PREFIX = "botsdktest_";
const BOT = "botsdkbot";
const enc = encodeURIComponent;
// The SDK's HTTP library (`request`) uses APIs Node deprecates; their warnings are noise here.
process.noDeprecation = true;

// matrix-bot-sdk requires its Rust crypto bindings when loaded, even when encryption is off.
// Their native library comes from a postinstall download (GitHub releases) that npm may not
// run; without it, an empty module stands in: nothing here encrypts.
let cryptoMissing = null;
const originalLoad = Module._load;
Module._load = function (request, parent, isMain) {
  if (request === "@matrix-org/matrix-sdk-crypto-nodejs" || request === "@turt2live/matrix-sdk-crypto-nodejs") {
    try {
      return originalLoad.call(this, request, parent, isMain);
    } catch (error) {
      cryptoMissing = error.message.split("\n")[0];
      return {};
    }
  }
  return originalLoad.call(this, request, parent, isMain);
};
const sdk = createRequire(path.join(modules, "botsdk-test.js"))("matrix-bot-sdk");
Module._load = originalLoad;
const { Appservice, LogService, LogLevel } = sdk;
LogService.setLevel(process.env.JS_E2EE_LOG ? LogLevel.DEBUG : LogLevel.ERROR);

const freePort = () =>
  new Promise(resolve => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });

/** Starts the hearth binary with `configText`; returns its base URL and `stop()`. */
async function startHearth(configText) {
  const binary = process.argv[2];
  if (!binary) throw new Error("usage: node tests/appservices/botsdk_bridge.mjs path/to/hearth");
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "hearth-botsdk-"));
  const config = path.join(dataDir, "hearth.toml");
  fs.writeFileSync(config, configText);
  const hearth = spawn(binary, ["serve", "--config", config], {
    env: { ...process.env, HEARTH_LISTEN: `127.0.0.1:${port}`, HEARTH_DATA_DIR: dataDir, HEARTH_LOG: "warn" },
    stdio: "inherit",
  });
  let exitCode = null;
  const exited = new Promise(resolve => {
    hearth.on("exit", code => resolve((exitCode = code)));
    hearth.on("error", error => resolve((exitCode = error.message)));
  });
  const base = `http://127.0.0.1:${port}`;
  await waitFor("hearth becomes healthy", async () => {
    if (exitCode !== null) throw new Error(`hearth exited during start-up (code ${exitCode})`);
    try {
      return (await fetch(`${base}/health`)).ok;
    } catch {
      return false;
    }
  }, 30000);
  return {
    base,
    stop: async () => {
      if (exitCode === null) hearth.kill("SIGTERM");
      const timer = setTimeout(() => hearth.kill("SIGKILL"), 30000);
      const code = await exited;
      clearTimeout(timer);
      fs.rmSync(dataDir, { recursive: true, force: true });
      check(code === 0, `hearth exited cleanly on SIGTERM (code ${code})`);
    },
  };
}

function registrationYaml(registration) {
  const { namespaces } = registration;
  const entries = list => (list.length ? "\n" + list.map(e => `    - exclusive: ${e.exclusive}\n      regex: ${JSON.stringify(e.regex)}`).join("\n") : " []");
  return [
    "# Written by tests/appservices/botsdk_bridge.mjs",
    `id: ${registration.id}`,
    `url: ${JSON.stringify(registration.url)}`,
    `as_token: ${JSON.stringify(registration.as_token)}`,
    `hs_token: ${JSON.stringify(registration.hs_token)}`,
    `sender_localpart: ${registration.sender_localpart}`,
    "namespaces:",
    `  users:${entries(namespaces.users)}`,
    `  aliases:${entries(namespaces.aliases)}`,
    `  rooms:${entries(namespaces.rooms)}`,
    "rate_limited: false",
    "receive_ephemeral: true",
    "de.sorunome.msc2409.push_ephemeral: true",
    "org.matrix.msc3202: true",
    "io.element.msc4190: true",
    "",
  ].join("\n");
}

async function exercise(base, serverName, asPort, registration) {
  const { as_token: asToken, hs_token: hsToken } = registration;
  const ghost = name => `@${PREFIX}${name}:${serverName}`;
  const alias = name => `#${PREFIX}${name}:${serverName}`;
  const botId = `@${BOT}:${serverName}`;

  /** A plain request: the real user's, or the appservice's where the SDK has no method. */
  const call = async (method, pathname, { token, body, query } = {}) => {
    const url = new URL(base + pathname);
    for (const [key, value] of Object.entries(query ?? {})) url.searchParams.set(key, value);
    const headers = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(WAIT),
    });
    const text = await response.text();
    let json;
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      json = { unparsed: text };
    }
    return { status: response.status, json };
  };

  const appservice = new Appservice({
    port: asPort,
    bindAddress: "127.0.0.1",
    homeserverName: serverName,
    homeserverUrl: base,
    registration,
  });

  // What the homeserver sends: every call's token, transaction bodies, pings.
  const calls = [];
  const bodies = [];
  const pings = [];
  const isAuthed = appservice.isAuthed.bind(appservice);
  appservice.isAuthed = req => {
    const ok = isAuthed(req);
    calls.push({ path: req.path, ok: ok && req.headers.authorization === `Bearer ${hsToken}` });
    if (ok && req.path.includes("/transactions/")) bodies.push(req.body);
    return ok;
  };
  // matrix-bot-sdk 0.8.0 has no ping endpoint; the express app takes extra routes before begin().
  appservice.expressAppInstance.post("/_matrix/app/v1/ping", (req, res) => {
    if (!appservice.isAuthed(req)) return res.status(401).json({ errcode: "M_UNKNOWN_TOKEN", error: "Bad token" });
    const id = req.body?.transaction_id;
    pings.push(id);
    if (id === "please-fail") return res.status(500).json({ errcode: "M_UNKNOWN", error: "failing on purpose" });
    return res.status(200).json({});
  });

  const events = [];
  const ephemeral = [];
  const joins = [];
  const queries = { users: [], rooms: [] };
  const createdRooms = {};
  appservice.on("room.event", (_roomId, event) => events.push(event));
  appservice.on("ephemeral.event", event => ephemeral.push(event));
  appservice.on("room.join", (roomId, event) => joins.push([roomId, event.state_key]));
  appservice.on("query.user", (userId, createUser) => {
    queries.users.push(userId);
    createUser(userId === ghost("bob") ? { display_name: "Bob Ghost" } : false);
  });
  appservice.on("query.room", (roomAlias, createRoom) => {
    queries.rooms.push(roomAlias);
    if (roomAlias === alias("room") || roomAlias === alias("public")) {
      const properties = { name: `Queried ${roomAlias}`, preset: roomAlias === alias("public") ? "public_chat" : "private_chat" };
      createdRooms[roomAlias] = properties; // the SDK puts the new room's ID in `__roomId`
      createRoom(properties);
    } else {
      createRoom(false);
    }
  });

  await appservice.begin();
  check(true, "appservice.begin(): listening, and the bot registered (or is in use)");
  try {
    const bot = appservice.botIntent;
    const whoami = await bot.underlyingClient.getWhoAmI();
    check(whoami.user_id === botId, "the bot's whoami", whoami);

    // --- Ghosts ---
    const alice = appservice.getIntentForSuffix("alice");
    check(alice.userId === ghost("alice"), "getIntentForSuffix names the ghost", alice.userId);
    try {
      // The SDK sends POST /register?user_id=<the ghost> (its ghost clients always name their
      // user); Synapse authenticates /register by the as_token alone.
      await alice.ensureRegistered();
    } catch (error) {
      check(false, "Intent.ensureRegistered registers a ghost (POST /register?user_id=<ghost>)", error.body ?? String(error));
    }
    const registeredDevice = alice.underlyingClient.impersonatedDeviceId;
    check(Boolean(registeredDevice), "ensureRegistered: the registration (m.login.application_service) returned a device", registeredDevice);
    const aliceWho = await alice.underlyingClient.getWhoAmI();
    check(
      aliceWho.user_id === ghost("alice") && aliceWho.device_id === registeredDevice,
      "whoami as the ghost names the device masqueraded with org.matrix.msc3202.device_id",
      aliceWho,
    );
    const byUserId = appservice.getIntentForUserId(ghost("alice"));
    check(byUserId === alice, "getIntentForUserId finds the same intent");

    // --- A real user's room ---
    const user = await register(base, "botsdkuser");
    const { user_id: userId, access_token: userToken } = user;
    check(userId === `@botsdkuser:${serverName}`, `server name is ${serverName}`, userId);
    let response = await call("POST", "/_matrix/client/v3/createRoom", {
      token: userToken,
      body: {
        preset: "private_chat",
        name: "Bridged room",
        invite: [botId, ghost("alice")],
        power_level_content_override: { users: { [botId]: 100 } },
      },
    });
    check(response.status === 200, "real user creates a room inviting the bot and a ghost", response);
    const roomId = response.json.room_id;
    check((await bot.joinRoom(roomId)) === roomId, "the bot joins (Intent.joinRoom)");
    check((await alice.joinRoom(roomId)) === roomId, "the ghost joins (Intent.joinRoom)");
    await waitFor("room.join for the ghost reaches the appservice", () => joins.some(([r, u]) => r === roomId && u === ghost("alice")), WAIT);
    check(true, "room.join emitted for the ghost from a transaction");
    check((await bot.getJoinedRooms()).includes(roomId), "Intent.getJoinedRooms lists the room");

    // --- Timestamp massaging ---
    const past = Date.now() - 3600000;
    const sent = await alice.underlyingClient.doRequest(
      "PUT",
      `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${crypto.randomUUID()}`,
      { ts: past },
      { msgtype: "m.text", body: "hello from the past" },
    );
    const plain = await alice.sendText(roomId, "hello from now");
    const stateTs = past + 4321;
    const topic = await bot.underlyingClient.doRequest(
      "PUT",
      `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.topic/`,
      { ts: stateTs },
      { topic: "a topic set in the past" },
    );
    const named = await bot.underlyingClient.sendStateEvent(roomId, "m.room.name", "", { name: "Renamed by the bridge" });
    response = await call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/messages`, { token: userToken, query: { dir: "b", limit: "50" } });
    const chunk = Object.fromEntries((response.json.chunk ?? []).map(event => [event.event_id, event]));
    check(chunk[sent.event_id]?.sender === ghost("alice"), "the real user sees the ghost's message", response.json);
    check(chunk[sent.event_id].origin_server_ts === past, "origin_server_ts is the massaged ?ts= of the message", [chunk[sent.event_id].origin_server_ts, past]);
    check(chunk[plain]?.content?.body === "hello from now", "Intent.sendText", chunk[plain]);
    check(chunk[topic.event_id]?.origin_server_ts === stateTs, "origin_server_ts is the massaged ?ts= of the state event", chunk[topic.event_id]);
    check(chunk[named]?.content?.name === "Renamed by the bridge", "sendStateEvent with an empty state key (trailing slash)", chunk[named]);

    // --- Transactions: the real user's message, typing and read receipt ---
    response = await call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/t1`, {
      token: userToken,
      body: { msgtype: "m.text", body: "hello bridge" },
    });
    check(response.status === 200, "real user sends a message", response);
    const messageId = response.json.event_id;
    const message = await waitFor("room.message from the real user", () => events.find(e => e.event_id === messageId && e.type === "m.room.message"), WAIT);
    check(message.sender === userId && message.content.body === "hello bridge" && message.room_id === roomId, "room.message: the real user's message", message);

    response = await call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/typing/${enc(userId)}`, {
      token: userToken,
      body: { typing: true, timeout: 20000 },
    });
    check(response.status === 200, "real user starts typing", response);
    await waitFor("typing in ephemeral.event", () => ephemeral.some(e => e.type === "m.typing" && e.room_id === roomId && e.content?.user_ids?.includes(userId)), WAIT);
    check(true, "ephemeral.event: m.typing naming the real user (de.sorunome.msc2409.ephemeral)");

    response = await call("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/receipt/m.read/${enc(sent.event_id)}`, { token: userToken, body: {} });
    check(response.status === 200, "real user sends a read receipt", response);
    await waitFor(
      "receipt in ephemeral.event",
      () => ephemeral.some(e => e.type === "m.receipt" && e.room_id === roomId && e.content?.[sent.event_id]?.["m.read"]?.[userId]),
      WAIT,
    );
    check(true, "ephemeral.event: m.receipt for the ghost's message");

    // --- Queries ---
    response = await call("GET", `/_matrix/client/v3/profile/${enc(ghost("bob"))}`, { token: userToken });
    check(queries.users.includes(ghost("bob")), "GET /profile of an unknown ghost emitted query.user", queries.users);
    check(response.status === 200 && response.json.displayname === "Bob Ghost", "the queried ghost exists, with the display name the bridge set", response);
    response = await call("GET", `/_matrix/client/v3/profile/${enc(ghost("nobody"))}`, { token: userToken });
    check(queries.users.includes(ghost("nobody")), "query.user for a ghost the bridge refuses", queries.users);
    check(response.status === 404 && response.json.errcode === "M_NOT_FOUND", "a refused ghost: 404 M_NOT_FOUND", response);

    response = await call("GET", `/_matrix/client/v3/directory/room/${enc(alias("room"))}`, { token: userToken });
    check(queries.rooms.includes(alias("room")), "GET /directory/room of an unknown alias emitted query.room", queries.rooms);
    check(
      response.status === 200 && response.json.room_id && response.json.room_id === createdRooms[alias("room")]?.__roomId,
      "the alias resolves to the room the bridge created",
      [response, createdRooms],
    );
    response = await call("GET", `/_matrix/client/v3/directory/room/${enc(alias("missing"))}`, { token: userToken });
    check(response.status === 404 && response.json.errcode === "M_NOT_FOUND", "a refused alias: 404 M_NOT_FOUND", response);
    response = await call("POST", `/_matrix/client/v3/join/${enc(alias("public"))}`, { token: userToken, body: {} });
    check(queries.rooms.includes(alias("public")), "joining an unknown alias emitted query.room", queries.rooms);
    check(response.status === 200 && response.json.room_id === createdRooms[alias("public")]?.__roomId, "the real user joined the queried room", response);
    const publicRoom = response.json.room_id;
    response = await call("PUT", `/_matrix/client/v3/rooms/${enc(publicRoom)}/send/m.room.message/t2`, {
      token: userToken,
      body: { msgtype: "m.text", body: "in the bot's room" },
    });
    await waitFor("a message in the bot's own room", () => events.some(e => e.room_id === publicRoom && e.sender === userId && e.type === "m.room.message"), WAIT);
    check(true, "room.message from a room where only the bot is joined");

    // --- Ping ---
    const pong = await bot.underlyingClient.doRequest("POST", `/_matrix/client/v1/appservice/${AS_ID}/ping`, null, { transaction_id: "botsdk-ping" });
    check(Number.isInteger(pong.duration_ms) && pong.duration_ms >= 0, `ping: duration_ms ${pong.duration_ms}`, pong);
    check(pings.includes("botsdk-ping"), "the homeserver pinged the appservice with the transaction_id", pings);
    response = await call("POST", `/_matrix/client/v1/appservice/${AS_ID}/ping`, { token: asToken, body: { transaction_id: "please-fail" } });
    check(response.status === 502 && response.json.errcode === "M_BAD_STATUS", "ping the appservice answers 500 to: 502 M_BAD_STATUS", response);
    check(response.json.status === 500, "M_BAD_STATUS carries the appservice's status", response.json);

    // --- Masquerading and tokens ---
    for (const target of [`@someoneelse:${serverName}`, userId]) {
      response = await call("GET", "/_matrix/client/v3/account/whoami", { token: asToken, query: { user_id: target } });
      check(
        response.status === 403 && ["M_EXCLUSIVE", "M_FORBIDDEN"].includes(response.json.errcode),
        `masquerading as ${target} refused: ${response.status} ${response.json.errcode}`,
        response,
      );
    }
    response = await call("GET", "/_matrix/client/v3/account/whoami", { token: "not-the-as-token", query: { user_id: ghost("alice") } });
    check(response.status === 401 && response.json.errcode === "M_UNKNOWN_TOKEN", "a wrong as_token: 401 M_UNKNOWN_TOKEN", response);

    // --- MSC4190 devices through the SDK's client ---
    const carol = appservice.getIntentForSuffix("carol");
    await carol.ensureRegistered();
    const carolClient = carol.underlyingClient;
    const carolFirst = carolClient.impersonatedDeviceId;
    await carolClient.doRequest("PUT", "/_matrix/client/v3/devices/BOTSDKDEV", null, { display_name: "bridge device" });
    const devices = await carolClient.getOwnDevices();
    check(devices.some(d => d.device_id === "BOTSDKDEV" && d.display_name === "bridge device"), "MSC4190: PUT /devices/{id} created a device without UIA", devices);
    carolClient.impersonateUserId(ghost("carol"), "BOTSDKDEV");
    const carolWho = await carolClient.getWhoAmI();
    check(carolWho.device_id === "BOTSDKDEV", "masquerading as the new device", carolWho);
    carolClient.impersonateUserId(ghost("carol"), carolFirst);
    await carolClient.doRequest("DELETE", "/_matrix/client/v3/devices/BOTSDKDEV", null, {});
    const after = await carolClient.getOwnDevices();
    check(!after.some(d => d.device_id === "BOTSDKDEV"), "MSC4190: DELETE /devices/{id} without UIA", after);

    say(`skip - encryption with matrix-bot-sdk: ${cryptoMissing ?? "not exercised here (mautrix_bridge.py covers end-to-bridge encryption)"}`);

    // --- Every call to the bridge carried the hs_token ---
    check(calls.length > 0, "the homeserver called the bridge", calls);
    const bad = calls.filter(c => !c.ok).map(c => c.path);
    check(bad.length === 0, `all ${calls.length} calls to the bridge carried \`Authorization: Bearer <hs_token>\``, bad);
    // Spec (appservice_ping.yaml): a token that is not an appservice's gets 403 M_FORBIDDEN.
    response = await call("POST", `/_matrix/client/v1/appservice/${AS_ID}/ping`, { token: userToken, body: {} });
    check(response.status === 403 && response.json.errcode === "M_FORBIDDEN", "ping with a user's token: 403 M_FORBIDDEN", response);
    // Spec (whoami): device_id can be omitted when no device goes with the token, "such as in
    // the case of application services"; Synapse omits it.
    response = await call("GET", "/_matrix/client/v3/account/whoami", { token: asToken });
    check(response.status === 200 && !("device_id" in response.json), "whoami of the appservice user names no device", response);

    const keys = new Set(bodies.flatMap(body => Object.keys(body).filter(key => (Array.isArray(body[key]) ? body[key].length : body[key]))));
    say(`note - transaction keys seen: ${[...keys].sort().join(", ")}`);
  } finally {
    appservice.stop();
  }
}

async function main() {
  const serverName = process.env.HEARTH_SERVER_NAME ?? "localhost";
  const escaped = serverName.replaceAll(".", "\\.");
  const asPort = await freePort();
  const registration = {
    id: AS_ID,
    url: `http://127.0.0.1:${asPort}`,
    as_token: crypto.randomBytes(24).toString("hex"),
    hs_token: crypto.randomBytes(24).toString("hex"),
    sender_localpart: BOT,
    namespaces: {
      users: [{ exclusive: true, regex: `@${PREFIX}.*:${escaped}` }],
      aliases: [{ exclusive: true, regex: `#${PREFIX}.*:${escaped}` }],
      rooms: [],
    },
    rate_limited: false,
    "de.sorunome.msc2409.push_ephemeral": true,
  };
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "botsdk-as-"));
  const registrationFile = path.join(work, "registration.yaml");
  fs.writeFileSync(registrationFile, registrationYaml(registration));
  const config = [
    "[appservices]",
    `config_files = [${JSON.stringify(registrationFile)}]`,
    "",
    "[rate_limits]",
    "message = { per_second = 1000.0, burst_count = 1000 }",
    "",
  ].join("\n");
  const server = await startHearth(config);
  let failure = null;
  try {
    await exercise(server.base, serverName, asPort, registration);
  } catch (error) {
    failure = error;
  }
  try {
    await server.stop();
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  if (failure) throw failure;
}

main().then(
  () => process.exit(0),
  error => {
    // The SDK rejects with a MatrixError (errcode in the body) or, for other failures, the raw
    // HTTP response.
    const detail = error?.stack ?? `HTTP ${error?.statusCode} ${JSON.stringify(error?.body)} (${error?.request?.method} ${error?.request?.uri?.href})`;
    process.stderr.write(`not ok - ${detail}\n`);
    process.exit(1);
  },
);
