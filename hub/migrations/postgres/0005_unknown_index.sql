-- The reconciler looks for communications left `unknown` on channels that can be asked (CRMs).
CREATE INDEX communications_unknown ON communications (channel, updated_at) WHERE status = 'unknown';
