-- Audit log of operator actions (retry, cancel), whoever sent them: API, CLI or Temporal UI.
CREATE TABLE IF NOT EXISTS operator_actions (
    id           bigserial PRIMARY KEY,
    sf_order_id  varchar(18) NOT NULL,
    action       text NOT NULL CHECK (action IN ('retry', 'cancel')),
    reason       text NOT NULL,
    requested_by text NOT NULL,
    outcome      text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS operator_actions_by_order ON operator_actions (sf_order_id, created_at);

-- Cache invalidations that could not reach Redis wait here and are retried, never dropped.
CREATE TABLE IF NOT EXISTS cache_invalidation_outbox (
    id          bigserial PRIMARY KEY,
    keys        text[] NOT NULL DEFAULT '{}',
    groups      text[] NOT NULL DEFAULT '{}',
    reason      text NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    next_try_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS cache_invalidation_outbox_due ON cache_invalidation_outbox (next_try_at);
