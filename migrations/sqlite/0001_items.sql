-- Catalogue items. `key` is the usearch key of the item's vector; AUTOINCREMENT keeps keys
-- of deleted items from being reused, so a stale index entry can never point at a new item.
CREATE TABLE items (
    key        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT    NOT NULL UNIQUE,
    title      TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    attributes TEXT    NOT NULL DEFAULT '{}',
    updated_at INTEGER NOT NULL
);
