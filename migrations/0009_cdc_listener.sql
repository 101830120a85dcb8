-- When each cursor's last handled event was committed in Salesforce (updated_at says when the
-- cursor last moved): a quiet channel (old event, recent moves) and a listener that was down
-- (old moves) are told apart, and an alert fires before a cursor leaves the 72-hour window.
ALTER TABLE cdc_replay_cursors ADD COLUMN IF NOT EXISTS last_event_at timestamptz;

-- Events the listener could not read: kept whole for inspection and re-drive, never blocking
-- the stream. The replay id is NULL when the message did not even carry one.
CREATE TABLE IF NOT EXISTS cdc_dead_letters (
    id          bigserial PRIMARY KEY,
    channel     text,
    replay_id   bigint,
    message     jsonb NOT NULL,
    reason      text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    redriven_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS cdc_dead_letters_once
    ON cdc_dead_letters (channel, replay_id) WHERE replay_id IS NOT NULL;

-- Each listener replica's state, for `GET /api/health/cdc` and operators: which one is active,
-- whether it is connected, when Salesforce last answered it.
CREATE TABLE IF NOT EXISTS cdc_listener_status (
    instance        text PRIMARY KEY,
    active          boolean NOT NULL DEFAULT false,
    connected       boolean NOT NULL DEFAULT false,
    last_connect_at timestamptz,
    last_event_at   timestamptz,
    reconnects      bigint NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
