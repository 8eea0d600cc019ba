-- Times are milliseconds since the Unix epoch (UTC), the same in both backends.
CREATE TABLE communications (
    id              TEXT PRIMARY KEY,
    channel         TEXT NOT NULL,
    campaign_id     TEXT NOT NULL,
    customer_id     TEXT NOT NULL,
    payload         TEXT NOT NULL,
    priority        BIGINT NOT NULL,
    status          TEXT NOT NULL,
    reason          TEXT,
    external_id     TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    parts           BIGINT NOT NULL DEFAULT 1,
    expires_at      BIGINT,
    next_attempt_at BIGINT NOT NULL,
    claimed_by      TEXT,
    claim_until     BIGINT,
    received_at     BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX communications_due ON communications (channel, priority DESC, next_attempt_at)
    WHERE status IN ('received', 'scheduled', 'retry_wait');
CREATE INDEX communications_campaign_pending ON communications (campaign_id)
    WHERE status IN ('received', 'scheduled', 'retry_wait');
CREATE INDEX communications_external ON communications (channel, external_id)
    WHERE external_id IS NOT NULL;
CREATE INDEX communications_claims ON communications (claim_until) WHERE status = 'sending';

CREATE TABLE attempts (
    communication_id TEXT NOT NULL,
    number           BIGINT NOT NULL,
    started_at       BIGINT NOT NULL,
    duration_ms      BIGINT NOT NULL,
    classification   TEXT NOT NULL,
    answer           TEXT NOT NULL,
    reason           TEXT,
    external_id      TEXT,
    PRIMARY KEY (communication_id, number)
);

CREATE TABLE responses (
    id               TEXT PRIMARY KEY,
    communication_id TEXT NOT NULL,
    channel          TEXT NOT NULL,
    kind             TEXT NOT NULL,
    received_at      BIGINT NOT NULL,
    occurred_at      BIGINT,
    detail           TEXT,
    dedupe_key       TEXT NOT NULL,
    UNIQUE (communication_id, dedupe_key)
);

CREATE TABLE outbox (
    seq         BIGSERIAL PRIMARY KEY,
    routing_key TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE rejections (
    seq         BIGSERIAL PRIMARY KEY,
    item_id     TEXT,
    received_at BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    payload     TEXT NOT NULL
);
CREATE INDEX rejections_item ON rejections (item_id);

CREATE TABLE cancelled_campaigns (
    campaign_id  TEXT PRIMARY KEY,
    cancelled_at BIGINT NOT NULL
);

CREATE TABLE channel_flags (
    channel    TEXT PRIMARY KEY,
    paused     BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL
);
