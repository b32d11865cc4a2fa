-- Application services: each one's place in the streams it is sent, its transaction in flight,
-- and the rooms it lists in its networks' directories.

-- Where each appservice stands: the last event, to-device message and device list change
-- handed to a transaction it accepted, and the last transaction ID used (IDs are never reused,
-- across restarts too). A new appservice starts at the present, not at the server's history.
CREATE TABLE appservice_queues (
    appservice_id TEXT PRIMARY KEY,
    events_position BIGINT NOT NULL,
    to_device_position BIGINT NOT NULL,
    device_lists_position BIGINT NOT NULL,
    last_txn_id BIGINT NOT NULL
);

-- The transaction being delivered to each appservice (one at a time, in order): written
-- before the first try and sent again, the same ID and body, until the appservice accepts it;
-- then its positions become the queue's and the row goes.
CREATE TABLE appservice_transactions (
    appservice_id TEXT PRIMARY KEY,
    txn_id BIGINT NOT NULL,
    body TEXT NOT NULL,
    events_position BIGINT NOT NULL,
    to_device_position BIGINT NOT NULL,
    device_lists_position BIGINT NOT NULL
);

-- Rooms an appservice published in the directory of one of its third-party networks
-- (`PUT /directory/list/appservice/{networkId}/{roomId}`), listed by `publicRooms` with that
-- `third_party_instance_id` (or `include_all_networks`).
CREATE TABLE appservice_room_list (
    appservice_id TEXT NOT NULL,
    network_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    published_ts BIGINT NOT NULL,
    PRIMARY KEY (appservice_id, network_id, room_id)
);
CREATE INDEX appservice_room_list_room ON appservice_room_list (room_id);
