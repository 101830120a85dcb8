-- Replay ids become opaque text, kept per transport. CometD's are integers, the Pub/Sub API's are
-- bytes (stored as hex), and neither converts to the other: a cursor is only meaningful to the
-- transport that gave it, so switching CDC_TRANSPORT starts from CDC_INITIAL_REPLAY and keeps
-- the other transport's cursor for a switch back.
--
-- "Only ever written forward" needs an order the ids no longer give: `position` is the listener's
-- own, the CometD replay id itself there, and on the Pub/Sub API the order of receipt counted
-- from the stored cursor (each session resumes from it and counts on). A write with a lower
-- position than the stored one is a late write of an earlier event and leaves the cursor.
ALTER TABLE cdc_replay_cursors ALTER COLUMN replay_id TYPE text USING replay_id::text;
ALTER TABLE cdc_replay_cursors ADD COLUMN transport text NOT NULL DEFAULT 'cometd'
    CHECK (transport IN ('cometd', 'pubsub'));
ALTER TABLE cdc_replay_cursors ADD COLUMN position bigint;
UPDATE cdc_replay_cursors SET position = replay_id::bigint;
ALTER TABLE cdc_replay_cursors ALTER COLUMN position SET NOT NULL;
ALTER TABLE cdc_replay_cursors DROP CONSTRAINT cdc_replay_cursors_pkey;
ALTER TABLE cdc_replay_cursors ADD PRIMARY KEY (transport, channel);

-- A dead letter names the transport its replay id belongs to; the same event read on the other
-- transport after a switch is a different letter.
ALTER TABLE cdc_dead_letters ALTER COLUMN replay_id TYPE text USING replay_id::text;
ALTER TABLE cdc_dead_letters ADD COLUMN transport text NOT NULL DEFAULT 'cometd'
    CHECK (transport IN ('cometd', 'pubsub'));
DROP INDEX IF EXISTS cdc_dead_letters_once;
CREATE UNIQUE INDEX cdc_dead_letters_once
    ON cdc_dead_letters (transport, channel, replay_id) WHERE replay_id IS NOT NULL;
