-- An operator action is recorded once per request, however often it arrives: a POST retried
-- after a lost reply, or the same retry/cancel sent as an update and as a signal. The caller
-- names the request (the HTTP Idempotency-Key, and the same id in the update's and signal's
-- arguments, also used as the Temporal update id), and records it with
--
--   INSERT INTO operator_actions (request_id, sf_order_id, action, reason, requested_by, outcome)
--   VALUES ($1, $2, $3, $4, $5, $6)
--   ON CONFLICT (request_id) DO NOTHING
--   RETURNING id
--
-- No row back means the request was recorded before: the caller reads that row
-- (WHERE request_id = $1) and answers as it did then, or refuses (409) if it names another
-- order or action (a reused key).
ALTER TABLE operator_actions ADD COLUMN request_id text;

-- Rows recorded before request ids existed were each their own request; `legacy-<id>` keeps them
-- apart (callers send UUIDs or Idempotency-Keys, never ids of that form).
UPDATE operator_actions SET request_id = 'legacy-' || id;

ALTER TABLE operator_actions
    ALTER COLUMN request_id SET NOT NULL,
    ADD CONSTRAINT operator_actions_request_id_key UNIQUE (request_id),
    ADD CONSTRAINT operator_actions_request_id_form CHECK (length(request_id) BETWEEN 1 AND 200);
