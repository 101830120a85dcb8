-- An operator asks for a dead letter to be handled again (`fulfillment dead-letters redrive`,
-- the ops API); the active listener does it and sets redriven_at, or records why it could not.
ALTER TABLE cdc_dead_letters ADD COLUMN IF NOT EXISTS redrive_requested_at timestamptz;
ALTER TABLE cdc_dead_letters ADD COLUMN IF NOT EXISTS redrive_requested_by text;
ALTER TABLE cdc_dead_letters ADD COLUMN IF NOT EXISTS redrive_outcome text;
CREATE INDEX IF NOT EXISTS cdc_dead_letters_redrive_requested
    ON cdc_dead_letters (id) WHERE redrive_requested_at IS NOT NULL AND redriven_at IS NULL;
