-- The portal's cross-system identity mapping (user <-> WHMCS client <-> Salesforce account).
-- The engine resolves an order's WHMCS client here first, then falls back to Account.WH_Account__c.
CREATE TABLE IF NOT EXISTS id_mappings (
    user_id         uuid PRIMARY KEY,
    whmcs_client_id bigint UNIQUE,
    sf_account_id   varchar(18) UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT id_mappings_sf_account_id_form CHECK (sf_account_id ~ '^[A-Za-z0-9]{18}$')
);
