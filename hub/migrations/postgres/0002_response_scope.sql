-- Whether a response speaks for the whole message (JSON gateways) or for one SMS part (Kannel).
ALTER TABLE responses ADD COLUMN whole_message BOOLEAN NOT NULL DEFAULT FALSE;
