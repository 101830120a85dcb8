-- One WHMCS order fulfils one Salesforce order. If a retry's look-up for an earlier AddOrder
-- matched the wrong order, the second intent that claims the same WHMCS order id is refused
-- instead of two fulfillments sharing (and later accepting or cancelling) one order. Intents
-- still waiting for AddOrder's reply have no WHMCS order id; NULLs are distinct, so any number
-- of them may wait.
ALTER TABLE billing_order_intents
    ADD CONSTRAINT billing_order_intents_whmcs_order_id_key UNIQUE (whmcs_order_id);
