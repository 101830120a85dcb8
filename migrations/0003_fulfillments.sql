-- The read model the HTTP API serves; written by the workflow's activities.
CREATE TABLE IF NOT EXISTS fulfillments (
    sf_order_id       varchar(18) PRIMARY KEY,
    sf_account_id     varchar(18) NOT NULL,
    workflow_id       text NOT NULL UNIQUE,
    status            text NOT NULL DEFAULT 'pending',
    step              text,
    error_code        text,
    error_message     text,
    whmcs_order_id    bigint,
    whmcs_invoice_id  bigint,
    whmcs_service_ids bigint[] NOT NULL DEFAULT '{}',
    attempts          integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT fulfillments_status_known
        CHECK (status IN ('pending', 'activating', 'activated', 'failed', 'cancelled'))
);
CREATE INDEX IF NOT EXISTS fulfillments_by_account ON fulfillments (sf_account_id, created_at DESC);
CREATE INDEX IF NOT EXISTS fulfillments_by_status ON fulfillments (status, updated_at DESC);

-- create_billing_order's idempotency record: the intent is written before AddOrder and the WHMCS
-- order id after it, so a retry after a timeout looks for the earlier order instead of adding one.
CREATE TABLE IF NOT EXISTS billing_order_intents (
    sf_order_id      varchar(18) PRIMARY KEY REFERENCES fulfillments (sf_order_id),
    whmcs_client_id  bigint NOT NULL,
    whmcs_order_id   bigint,
    whmcs_invoice_id bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz
);
