-- Run once by the bundled Postgres, when its data volume is first initialised, in the engine's
-- database (POSTGRES_DB). It stands in for the customer portal's migrations: id_mappings is the
-- portal's table (migrations/portal.py), which `fulfillment migrate` checks but never creates,
-- so without it the migrate job would refuse this database and no engine process would start.
-- A production database gets the table from the portal; do not run this there.
-- The same DDL as migrations/portal.py's dev and test databases (a test keeps them equal).
CREATE TABLE IF NOT EXISTS id_mappings (
    user_id         uuid PRIMARY KEY,
    whmcs_client_id bigint UNIQUE,
    sf_account_id   varchar(18) UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT id_mappings_sf_account_id_form CHECK (sf_account_id ~ '^[A-Za-z0-9]{18}$')
);
