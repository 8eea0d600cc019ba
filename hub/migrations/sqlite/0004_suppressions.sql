-- Addresses the hub must not mail again (hard bounce, complaint, unsubscribe), checked before
-- every e-mail send. Stored lower-cased; the address is personal data and is never logged.
CREATE TABLE suppressions (
    address          TEXT   NOT NULL PRIMARY KEY,
    reason           TEXT   NOT NULL,
    communication_id TEXT,
    created_at       INTEGER NOT NULL
);
