-- The change log: every catalogue write appends its index operations here, in the same
-- transaction as the item rows. The vector index is derived from the items; replaying the
-- changes after a snapshot's sequence number brings an older index file up to date.
CREATE TABLE changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The item's key at the time of the change. Keys are never reused, so replaying an
    -- operation twice has the same effect as replaying it once.
    item_key   INTEGER NOT NULL,
    -- 'add': the key's vector belongs in the index; 'remove': it does not; 'update': the item's
    -- title or attributes changed and its vector did not.
    op         TEXT    NOT NULL CHECK (op IN ('add', 'remove', 'update')),
    changed_at INTEGER NOT NULL
);

-- What shoppers did with recommended items, the input of `attnrec train --feedback`.
CREATE TABLE feedback (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The client's user id, or its keyed hash when feedback.hash_user_ids is on.
    user_id     TEXT,
    query       TEXT,
    item_id     TEXT    NOT NULL,
    event       TEXT    NOT NULL CHECK (event IN ('click', 'add_to_cart', 'purchase', 'rating')),
    value       REAL    NOT NULL,
    -- Unix seconds when the event happened, as sent by the client.
    occurred_at REAL    NOT NULL,
    -- Unix seconds when the service stored it.
    received_at INTEGER NOT NULL
);

CREATE INDEX feedback_by_time ON feedback (occurred_at);
CREATE INDEX feedback_by_user ON feedback (user_id, occurred_at);

-- The sequence number of each item's latest change, returned to clients as its version.
ALTER TABLE items ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
