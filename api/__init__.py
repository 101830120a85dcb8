"""The thin HTTP API: the portal's reads, the operators' actions, the public catalog, the WHMCS
webhook, health, metrics and the Temporal UI's codec endpoint (`fulfillment api`)."""
