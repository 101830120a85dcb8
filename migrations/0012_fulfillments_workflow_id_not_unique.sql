-- fulfillments.workflow_id is `order-fulfillment-<sf_order_id>`, so the primary key already makes
-- it unique; its own UNIQUE constraint only hurt. Writers upsert with ON CONFLICT (sf_order_id),
-- and a second unique index is not an arbiter: when two writers raced to create an order's first
-- row, the loser failed on workflow_id instead of taking the conflict path (seen in CI).
ALTER TABLE fulfillments DROP CONSTRAINT IF EXISTS fulfillments_workflow_id_key;
