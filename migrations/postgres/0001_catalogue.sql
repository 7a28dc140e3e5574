-- The PostgreSQL schema shared by replicas: the same tables as the SQLite schema, with
-- identity columns in place of AUTOINCREMENT. Identity values are never reused, so an item's
-- `key` (the usearch key of its vector) and a change's `seq` stay unique for good.
CREATE TABLE items (
    key        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT   NOT NULL UNIQUE,
    title      TEXT   NOT NULL,
    text       TEXT   NOT NULL,
    attributes TEXT   NOT NULL DEFAULT '{}',
    updated_at BIGINT NOT NULL,
    -- The sequence number of the item's latest change, returned to clients as its version.
    seq        BIGINT NOT NULL DEFAULT 0,
    -- The item's embedding as little-endian f32 values, written by the replica that embedded
    -- it, so the other replicas index it without embedding it again. NULL for items loaded by
    -- `attnrec index`, which replicas embed themselves when they need them.
    vector     BYTEA
);

-- The change log that replicas follow. Catalogue writes take one transaction-level advisory
-- lock before they draw sequence numbers, so changes commit in `seq` order and a replica that
-- has read every change up to `seq` never misses an earlier one that commits later.
CREATE TABLE changes (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item_key   BIGINT NOT NULL,
    op         TEXT   NOT NULL CHECK (op IN ('add', 'remove', 'update')),
    -- Unix seconds with a fraction, from the database server's clock: replicas measure their
    -- replication lag against it.
    changed_at DOUBLE PRECISION NOT NULL DEFAULT EXTRACT(EPOCH FROM clock_timestamp())
);

CREATE TABLE feedback (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The client's user id, or its keyed hash when feedback.hash_user_ids is on.
    user_id     TEXT,
    query       TEXT,
    item_id     TEXT             NOT NULL,
    event       TEXT             NOT NULL CHECK (event IN ('click', 'add_to_cart', 'purchase', 'rating')),
    value       DOUBLE PRECISION NOT NULL,
    -- Unix seconds when the event happened, as sent by the client.
    occurred_at DOUBLE PRECISION NOT NULL,
    -- Unix seconds when the service stored it.
    received_at BIGINT           NOT NULL
);

CREATE INDEX feedback_by_time ON feedback (occurred_at);
CREATE INDEX feedback_by_user ON feedback (user_id, occurred_at);
