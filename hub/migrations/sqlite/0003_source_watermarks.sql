-- How far an incremental poller (the EISSD DWH table) has read: every row at or before
-- (position, row_key) in the source's order has been recorded.
CREATE TABLE source_watermarks (
    source     TEXT    NOT NULL PRIMARY KEY,
    position   TEXT    NOT NULL,
    row_key    TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);
