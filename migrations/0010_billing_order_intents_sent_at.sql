-- When an attempt last sent AddOrder for the order, committed just before the request went out.
-- A WHMCS order can appear long after the call gave up (module hooks run inside the request),
-- so a lookup that misses within WHMCS_SETTLE_SECONDS of this time waits and looks again
-- instead of sending a second AddOrder. NULL: no attempt recorded here ever sent one.
ALTER TABLE billing_order_intents ADD COLUMN IF NOT EXISTS sent_at timestamptz;
