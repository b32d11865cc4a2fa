// matrix-js-sdk against a real `hearth`: the decisions the SDK (and Element Web on top of it)
// takes from `/versions`, and the features they switch on.
//
// - Media: Element asks `isVersionSupported("v1.11")` and, when true, builds authenticated
//   media URLs (`/_matrix/client/v1/media/...`) with the SDK's `mxcUrlToHttp`. Bob uploads a
//   picture and posts it; Alice downloads it and a thumbnail through the URLs her SDK builds.
//   The legacy URLs (what the SDK builds for an old server) are refused, as docs/media.md says.
// - Threads: at start-up the SDK asks `doesServerSupportThread()`; with server-side support it
//   sends thread replies as `m.thread` (not the pre-standard `io.element.thread`), and lists
//   threads with `/_matrix/client/v1/rooms/{roomId}/threads`, each root carrying its thread
//   summary. Element's thread panel is `room.fetchRoomThreads()`. With v1.4 the SDK also asks
//   for unread counts per thread and sends read receipts with a `thread_id`.
//
//   node tests/clients/js_media_threads.mjs target/debug/hearth
//
// Needs the SDK installed by .ci/run in target/js-e2ee (or JS_E2EE_MODULES).

import zlib from "node:zlib";

import { check, loadSdk, register as registerUser, say, startServer, startSession, waitFor } from "./js_harness.mjs";

const sdk = await loadSdk("index.js");
const { Thread, THREAD_RELATION_TYPE, FeatureSupport } = await loadSdk("models/thread.js");
const { Feature, ServerSupport } = await loadSdk("feature.js");

const { base, stop } = await startServer("js_media_threads.mjs");
const clients = [];
let failure = null;

const register = username => registerUser(base, username);

/** A client started as Element Web starts one: thread support on, a first sync awaited. */
async function session(credentials, label) {
  const client = await startSession(sdk, base, credentials, label, { initialSyncLimit: 20, threadSupport: true });
  clients.push(client);
  return client;
}

/** An RGB PNG with a gradient, encoded here so the test needs no image files. */
function png(width, height) {
  const chunk = (type, data) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(Buffer.concat([Buffer.from(type), data])));
    return Buffer.concat([length, Buffer.from(type), data, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8 bits per channel, RGB, no interlace
  const rows = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3);
    for (let x = 0; x < width; x++) row.set([x % 256, y % 256, 128], 1 + x * 3);
    rows.push(row);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", zlib.deflateSync(Buffer.concat(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

/** Width and height of a PNG or baseline/progressive JPEG. */
function dimensions(bytes) {
  if (bytes.subarray(1, 4).toString() === "PNG") return [bytes.readUInt32BE(16), bytes.readUInt32BE(20)];
  for (let at = 2; at + 9 < bytes.length; ) {
    const marker = bytes[at + 1];
    if (marker === 0xc0 || marker === 0xc2) return [bytes.readUInt16BE(at + 7), bytes.readUInt16BE(at + 5)];
    at += 2 + bytes.readUInt16BE(at + 2);
  }
  return null;
}

try {
  const alice = await session(await register("alice"), "alice");
  const bob = await session(await register("bob"), "bob");
  const { room_id: roomId } = await bob.createRoom({ preset: "private_chat", name: "Pictures", invite: [alice.getUserId()] });
  await alice.joinRoom(roomId);

  // --- Media ---------------------------------------------------------------------------
  const useAuthentication = await alice.isVersionSupported("v1.11");
  check(useAuthentication, "the SDK sees v1.11, so Element uses authenticated media");
  const picture = png(640, 480);
  const { content_uri: mxc } = await bob.uploadContent(picture, { name: "gradient.png", type: "image/png" });
  check(mxc?.startsWith("mxc://"), "bob's SDK uploads the picture", mxc);
  const sent = await bob.sendMessage(roomId, {
    msgtype: "m.image",
    body: "gradient.png",
    url: mxc,
    info: { mimetype: "image/png", size: picture.length, w: 640, h: 480 },
  });
  const room = await waitFor("alice's client has the room", () => alice.getRoom(roomId));
  const image = await waitFor("the picture reaches alice's timeline", () => room.findEventById(sent.event_id));
  const url = image.getContent().url;

  const fetchAs = (client, address) => fetch(address, { headers: { authorization: `Bearer ${client.getAccessToken()}` } });
  const downloadUrl = alice.mxcUrlToHttp(url, undefined, undefined, undefined, false, true, useAuthentication);
  check(downloadUrl.includes("/_matrix/client/v1/media/download/"), "the SDK builds an authenticated download URL", downloadUrl);
  const download = await fetchAs(alice, downloadUrl);
  const downloaded = Buffer.from(await download.arrayBuffer());
  check(download.status === 200 && downloaded.equals(picture), "alice downloads the picture byte for byte", download.status);
  check(download.headers.get("content-type") === "image/png", "with its content type", download.headers.get("content-type"));

  // A small "scale" request gets the smallest configured thumbnail at least that large
  // (320×240 by default): smaller than the picture, never smaller than asked.
  const thumbnailUrl = alice.mxcUrlToHttp(url, 32, 32, "scale", false, true, useAuthentication);
  check(thumbnailUrl.includes("/_matrix/client/v1/media/thumbnail/"), "the SDK builds an authenticated thumbnail URL", thumbnailUrl);
  const thumbnail = await fetchAs(alice, thumbnailUrl);
  const thumbnailBytes = Buffer.from(await thumbnail.arrayBuffer());
  const size = dimensions(thumbnailBytes);
  check(thumbnail.status === 200 && /^image\/(png|jpeg)$/.test(thumbnail.headers.get("content-type")), "alice gets a thumbnail", thumbnail.status);
  check(size && size[0] >= 32 && size[1] >= 32 && size[0] < 640 && size[0] * 3 === size[1] * 4, "scaled down, aspect kept", size);
  // Element's timeline asks for 800×600 "scale": the picture is smaller, so it comes whole.
  const elementThumbnail = await fetchAs(alice, alice.mxcUrlToHttp(url, 800, 600, "scale", false, true, useAuthentication));
  const elementSize = dimensions(Buffer.from(await elementThumbnail.arrayBuffer()));
  check(elementThumbnail.status === 200 && elementSize?.[0] === 640 && elementSize[1] === 480, "Element's 800×600 request gets the picture unscaled", elementSize);

  // What an SDK that believed the server old would fetch: refused (docs/media.md).
  const legacy = await fetchAs(alice, alice.mxcUrlToHttp(url, undefined, undefined, undefined, false, true, false));
  check(legacy.status === 404 && (await legacy.json()).errcode === "M_NOT_FOUND", "the legacy unauthenticated URL is refused", legacy.status);

  // --- Threads -------------------------------------------------------------------------
  check(Thread.hasServerSideSupport === FeatureSupport.Stable, "the SDK finds stable server-side threads", Thread.hasServerSideSupport);
  check(Thread.hasServerSideListSupport === FeatureSupport.Stable, "and the stable thread list API", Thread.hasServerSideListSupport);
  check(THREAD_RELATION_TYPE.name === "m.thread", "so it relates thread replies with m.thread", THREAD_RELATION_TYPE.name);

  const root = await alice.sendTextMessage(roomId, "Where shall we eat?");
  await waitFor("bob's client has the root", () => bob.getRoom(roomId)?.findEventById(root.event_id));
  const reply = await bob.sendTextMessage(roomId, root.event_id, "The noodle place");
  const sentReply = await (await fetchAs(bob, `${base}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/event/${encodeURIComponent(reply.event_id)}`)).json();
  check(sentReply.content["m.relates_to"]?.rel_type === "m.thread" && sentReply.content["m.relates_to"].event_id === root.event_id, "bob's SDK sent the reply as m.thread", sentReply.content);

  const list = await alice.createThreadListMessagesRequest(roomId, null, 20, sdk.Direction.Backward, sdk.ThreadFilterType.All);
  const listed = list.chunk.find(event => event.event_id === root.event_id);
  check(listed, "GET /v1/rooms/{roomId}/threads lists the root", list.chunk.map(event => event.event_id));
  const summary = listed.unsigned?.["m.relations"]?.["m.thread"];
  check(summary?.count === 1 && summary.latest_event?.event_id === reply.event_id, "with its thread summary (one reply, the latest)", summary);
  check(summary.current_user_participated === true, "alice, who wrote the root, participated", summary);

  // Element's thread panel: the room's thread timelines, filled from the thread list.
  const aliceRoom = alice.getRoom(roomId);
  await aliceRoom.createThreadsTimelineSets();
  await aliceRoom.fetchRoomThreads();
  const panel = aliceRoom.threadsTimelineSets[0]?.getLiveTimeline().getEvents().map(event => event.getId()) ?? [];
  check(panel.includes(root.event_id), "the thread panel (fetchRoomThreads) shows the thread", panel);
  const thread = await waitFor("alice's client builds the thread with bob's reply", () => {
    const found = aliceRoom.getThread(root.event_id);
    return found && found.length === 1 && found.events.some(event => event.getId() === reply.event_id) ? found : null;
  });
  check(thread.rootEvent?.getId() === root.event_id, "the thread hangs off the root");

  // Per-thread unread counts: with v1.4 the SDK asks its sync filter for them and reads them.
  check(alice.canSupport.get(Feature.ThreadUnreadNotifications) === ServerSupport.Stable, "the SDK turns on per-thread unread counts");
  const threadCount = () => aliceRoom.getThreadUnreadNotificationCount(root.event_id, sdk.NotificationCountType.Total) ?? 0;
  await waitFor("alice's client counts bob's reply as unread in its thread", () => threadCount() === 1);
  say("ok - alice's client counts bob's reply as unread in its thread");
  // Element's read receipt in a thread carries the thread's ID, and clears that thread only.
  const replyEvent = await waitFor("alice's client has the reply", () => aliceRoom.findEventById(reply.event_id));
  await alice.sendReadReceipt(replyEvent);
  await bob.sendTextMessage(roomId, "back in the main timeline");
  await waitFor("the threaded receipt clears the thread's count", () => threadCount() === 0);
  say("ok - the threaded read receipt cleared the thread's count");
  // ...and only the thread's: bob's picture and his last message stay unread in the main
  // timeline (an unthreaded receipt on the reply would have cleared the picture too).
  const mainCount = () => aliceRoom.getRoomUnreadNotificationCount(sdk.NotificationCountType.Total);
  await waitFor("the main timeline keeps its two unread messages", () => mainCount() === 2);
  say("ok - the main timeline keeps its two unread messages");
  say("ok - threads and pictures work through the SDK's own logic");
} catch (error) {
  failure = error;
} finally {
  for (const client of clients) client.stopClient();
  await stop();
}
if (failure) {
  process.stdout.write(`not ok - ${failure.stack ?? failure}\n`);
  process.exit(1);
}
process.exit(0);
