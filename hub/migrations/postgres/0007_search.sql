-- Search of communications (`GET /v1/communications`, the console): newest first on
-- (received_at, id), keyset-paginated, each filter served by an index that ends in the same
-- order, so page 500 costs what page 1 does.
--
-- recipient_key: the first 16 bytes of SHA-256 of the normalised recipient (trimmed, lower
-- case), hex. It finds a communication by a recipient typed in full without a second plain copy
-- of the address in an index. Rows accepted before this migration have none (NULL) and are not
-- found by recipient.
ALTER TABLE communications ADD COLUMN recipient_key TEXT;
CREATE INDEX communications_recent ON communications (received_at, id);
CREATE INDEX communications_by_campaign ON communications (campaign_id, received_at, id);
CREATE INDEX communications_by_customer ON communications (customer_id, received_at, id);
CREATE INDEX communications_by_recipient ON communications (recipient_key, received_at, id)
    WHERE recipient_key IS NOT NULL;
CREATE INDEX communications_by_channel_status ON communications (channel, status, received_at, id);
