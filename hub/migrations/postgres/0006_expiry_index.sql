-- Housekeeping expires pending communications whose validity ran out even while their channel
-- is paused or blocked (the dispatcher only sees what it claims).
CREATE INDEX communications_expiry ON communications (expires_at)
    WHERE status IN ('received', 'scheduled', 'retry_wait') AND expires_at IS NOT NULL;
