-- A fulfillment is recorded from its first step, before the order (and so its account) has been
-- read; an order that does not exist (ORDER_NOT_FOUND) never has one. The account is filled in
-- by the first write after the order was read.
ALTER TABLE fulfillments ALTER COLUMN sf_account_id DROP NOT NULL;
