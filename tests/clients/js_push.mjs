// matrix-js-sdk against a real `hearth`: push rules, unread counts and a pusher, the way
// Element Web (rules, counts) and Element X / mobile apps (pusher) use them.
//
// Alice's client adds a keyword rule and disables another through the SDK, and sees her
// rules change through sync (m.push_rules). She sets an HTTP pusher pointing at a push
// gateway this script runs. Bob's messages then reach the gateway as Push Gateway API
// notifications (the keyword one highlighted), alice's client shows the server's unread and
// highlight counts for the room, and her read receipt clears them.
//
//   node tests/clients/js_push.mjs target/debug/hearth
//
// Needs the SDK installed by .ci/run in target/js-e2ee (or JS_E2EE_MODULES). The server is
// started with HEARTH_PUSH_IP_RANGE_ALLOWLIST so it may reach the gateway on loopback.

import http from "node:http";

import { check, loadSdk, register as registerUser, say, startServer, startSession, waitFor } from "./js_harness.mjs";

const sdk = await loadSdk("index.js");

// The push gateway: records every notification, answers that it took it.
const received = [];
const gateway = http.createServer((request, response) => {
  let body = "";
  request.on("data", chunk => (body += chunk));
  request.on("end", () => {
    if (request.method === "POST" && request.url === "/_matrix/push/v1/notify") {
      received.push({ at: Date.now(), body: JSON.parse(body) });
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify({ rejected: [] }));
    } else {
      response.writeHead(404);
      response.end();
    }
  });
});
await new Promise(resolve => gateway.listen(0, "127.0.0.1", resolve));
const gatewayUrl = `http://127.0.0.1:${gateway.address().port}/_matrix/push/v1/notify`;

const { base, stop } = await startServer("js_push.mjs", { HEARTH_PUSH_IP_RANGE_ALLOWLIST: '["127.0.0.1/32"]' });
const clients = [];
let failure = null;

const register = username => registerUser(base, username);

async function session(credentials, label) {
  const client = await startSession(sdk, base, credentials, label, { initialSyncLimit: 10 });
  clients.push(client);
  return client;
}

try {
  const alice = await session(await register("alice"), "alice");
  const bob = await session(await register("bob"), "bob");
  check(alice.pushRules?.global?.override?.[0]?.rule_id === ".m.rule.master", "alice's client has her push rules from the first sync");

  // Rules, through the SDK.
  await alice.addPushRule("global", sdk.PushRuleKind.ContentSpecific, "deploy", {
    actions: ["notify", { set_tweak: "highlight" }, { set_tweak: "sound", value: "alarm" }],
    pattern: "deploy",
  });
  await alice.setPushRuleEnabled("global", sdk.PushRuleKind.Override, ".m.rule.is_room_mention", false);
  const rules = await alice.getPushRules();
  check(rules.global.content.some(rule => rule.rule_id === "deploy" && rule.pattern === "deploy"), "getPushRules shows the new keyword rule");
  check(
    rules.global.override.some(rule => rule.rule_id === ".m.rule.is_room_mention" && rule.enabled === false),
    "getPushRules shows the disabled predefined rule",
  );
  await waitFor("the rule change reaches alice's client through sync (m.push_rules)", () =>
    alice.pushRules?.global?.content?.some(rule => rule.rule_id === "deploy"),
  );
  say("ok - the rule change reached alice's client through sync");

  // A pusher, through the SDK.
  await alice.setPusher({
    kind: "http",
    app_id: "org.example.push",
    pushkey: "alice-phone-token",
    app_display_name: "Example",
    device_display_name: "Alice's phone",
    lang: "en",
    data: { url: gatewayUrl, format: "event_id_only" },
  });
  const { pushers } = await alice.getPushers();
  check(pushers.length === 1 && pushers[0].pushkey === "alice-phone-token" && pushers[0].data.url === gatewayUrl, "getPushers lists the pusher", pushers);

  // A group of three (so not a one-to-one room), where bob talks.
  const carol = await session(await register("carol"), "carol");
  const { room_id: roomId } = await bob.createRoom({ preset: "public_chat", name: "Ops" });
  await alice.joinRoom(roomId);
  await carol.joinRoom(roomId);
  const plain = await bob.sendTextMessage(roomId, "good morning");
  const sentAt = Date.now();
  const keyword = await bob.sendTextMessage(roomId, "time to deploy");

  // Notifications of events (a read receipt also brings a counts-only badge update).
  const eventPushes = () => received.filter(n => n.body.notification.event_id);
  const notifications = await waitFor("both messages reach the push gateway", () => (eventPushes().length >= 2 ? eventPushes() : null));
  const [first, second] = notifications.map(n => n.body.notification);
  check(first.event_id === plain.event_id && second.event_id === keyword.event_id, "the gateway got them in order", notifications);
  check(first.room_id === roomId && first.devices[0].pushkey === "alice-phone-token", "the notification names the room and alice's pushkey", first);
  check(first.content === undefined && first.sender === undefined, "event_id_only leaves the content out", first);
  check(second.devices[0].tweaks.highlight === true && second.devices[0].tweaks.sound === "alarm", "alice's keyword rule highlighted it, with her sound", second);
  check(second.prio === "high" && first.prio === "low", "prio follows the tweaks", [first.prio, second.prio]);
  check(second.counts.unread === 1, "counts.unread: one room with unread notifications", second.counts);
  say(`ok - send to gateway: ${notifications[0].at - sentAt} ms for the first message`);

  // The server's counts, as alice's client shows them.
  const room = await waitFor("alice's client has the room", () => alice.getRoom(roomId));
  await waitFor("alice's client shows 2 unread, 1 highlight", () =>
    room.getUnreadNotificationCount(sdk.NotificationCountType.Total) === 2 &&
    room.getUnreadNotificationCount(sdk.NotificationCountType.Highlight) === 1,
  );
  say("ok - alice's client shows 2 unread, 1 highlight");
  // Her read receipt clears them.
  const event = await waitFor("alice's client has the keyword message", () => room.findEventById(keyword.event_id));
  await alice.sendReadReceipt(event);
  await bob.sendTextMessage(roomId, "thanks"); // a new event, so her sync has something to bring
  await waitFor("after her receipt, alice's counts are down to the message after it", () =>
    room.getUnreadNotificationCount(sdk.NotificationCountType.Total) === 1 &&
    room.getUnreadNotificationCount(sdk.NotificationCountType.Highlight) === 0,
  );
  say("ok - alice's read receipt cleared the counts up to it");
  await waitFor("the receipt sends her phone a counts-only badge update", () =>
    received.some(n => !n.body.notification.event_id && n.body.notification.counts),
  );
  say("ok - the receipt sent her phone a counts-only badge update");

  // Removing the pusher stops the pushes.
  await alice.setPusher({ kind: null, app_id: "org.example.push", pushkey: "alice-phone-token" });
  check((await alice.getPushers()).pushers.length === 0, "the pusher is removed");
  const before = eventPushes().length;
  await bob.sendTextMessage(roomId, "deploy done");
  await new Promise(resolve => setTimeout(resolve, 1000));
  check(eventPushes().length === before, "nothing reaches the gateway after removal");
} catch (error) {
  failure = error;
} finally {
  for (const client of clients) client.stopClient();
  gateway.close();
  await stop();
}
if (failure) {
  process.stdout.write(`not ok - ${failure.stack ?? failure}\n`);
  process.exit(1);
}
process.exit(0);
