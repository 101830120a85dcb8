-- Where the CDC listener resumes after a restart: the last replay id it fully handled per channel.
CREATE TABLE IF NOT EXISTS cdc_replay_cursors (
    channel    text PRIMARY KEY,
    replay_id  bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every change event the listener received, keyed by (channel, replay id) so a replayed or
-- duplicated delivery is recognised, and what was done with it (for audit and re-drive).
CREATE TABLE IF NOT EXISTS cdc_event_inbox (
    channel      text NOT NULL,
    replay_id    bigint NOT NULL,
    entity       text NOT NULL,
    change_type  text NOT NULL,
    record_ids   text[] NOT NULL DEFAULT '{}',
    payload      jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    outcome      text,
    error        text,
    PRIMARY KEY (channel, replay_id)
);
CREATE INDEX IF NOT EXISTS cdc_event_inbox_unprocessed
    ON cdc_event_inbox (received_at) WHERE processed_at IS NULL;
