-- Unread counts per room and thread: the user's distinct (room, thread) pairs and the rows
-- after each one's read position, read from the index alone.
CREATE INDEX event_push_actions_thread ON event_push_actions (user_id, room_id, thread_id, stream_ordering);
