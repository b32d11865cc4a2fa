-- Rooms a user has forgotten (`POST /rooms/{roomId}/forget`), with the membership event (a
-- leave or a ban) they forgot the room at. Sync leaves such rooms out; any later membership
-- event of theirs (a new invite, a rejoin) no longer matches, and the room is back.
CREATE TABLE forgotten_rooms (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    membership_event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
