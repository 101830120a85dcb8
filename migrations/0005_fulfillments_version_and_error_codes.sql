-- fulfillments.version: a late write must not overwrite newer state. Activities are retried
-- (a lost reply, a worker restart), so a write can land after a newer one. Each write carries
-- the version its workflow gave it, and lands only if it is newer than what is stored:
--
--   INSERT INTO fulfillments AS f
--       (sf_order_id, sf_account_id, workflow_id, status, step, error_code, error_message,
--        whmcs_order_id, whmcs_invoice_id, whmcs_service_ids, attempts, version)
--   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
--   ON CONFLICT (sf_order_id) DO UPDATE SET
--       status = EXCLUDED.status, step = EXCLUDED.step,
--       error_code = EXCLUDED.error_code, error_message = EXCLUDED.error_message,
--       whmcs_order_id = EXCLUDED.whmcs_order_id, whmcs_invoice_id = EXCLUDED.whmcs_invoice_id,
--       whmcs_service_ids = EXCLUDED.whmcs_service_ids, attempts = EXCLUDED.attempts,
--       version = EXCLUDED.version, updated_at = now()
--   WHERE f.version < EXCLUDED.version
--   RETURNING version
--
-- or, for a row known to exist, UPDATE fulfillments SET ..., version = $new, updated_at = now()
-- WHERE sf_order_id = $id AND version < $new. No row back (UPDATE 0) means a newer or the same
-- version is stored already: the write is stale or a repeat, and the activity succeeds without
-- it. Strictly "<", so a repeat is a no-op and the row is written once per version.
--
-- Versions come from the workflow, deterministically (replay gives the same numbers), and must
-- grow across runs too, since a cancelled or expired fulfillment restarts under the same
-- workflow id: e.g. the run's start time in milliseconds * 1_000_000 + a per-run write counter
-- (fits bigint until the year 2262). Rows written before this column existed are version 0.
ALTER TABLE fulfillments
    ADD COLUMN version bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT fulfillments_version_not_negative CHECK (version >= 0);

-- A writer that forgets the version check must fail loudly, not move a row back in time.
-- Writes that leave the version as it is (an operator's manual fix) pass.
CREATE FUNCTION fulfillments_version_never_decreases() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'fulfillments %: version % is older than the stored version %',
        OLD.sf_order_id, NEW.version, OLD.version
        USING ERRCODE = 'check_violation',
              HINT = 'write with WHERE version < $new (migrations/0005)';
END
$$;
CREATE TRIGGER fulfillments_version_never_decreases
    BEFORE UPDATE ON fulfillments
    FOR EACH ROW WHEN (NEW.version < OLD.version)
    EXECUTE FUNCTION fulfillments_version_never_decreases();

-- error_code is the closed list of DESIGN.md ("Error codes", domain.errors.ErrorCode); anything
-- else would reach the portal and Salesforce as a code nobody handles. NULL while no error.
ALTER TABLE fulfillments
    ADD CONSTRAINT fulfillments_error_code_known CHECK (
        error_code IS NULL OR error_code IN (
            'ORDER_NOT_FOUND', 'INVALID_ORDER', 'BILLING_CLIENT_NOT_LINKED',
            'PAYMENT_METHOD_MISSING', 'PRODUCT_NOT_MAPPED', 'BILLING_ORDER_REJECTED',
            'SIM_PROVISIONING_FAILED', 'SIM_PROVISIONING_TIMEOUT', 'UPSTREAM_UNAVAILABLE'
        )
    );
