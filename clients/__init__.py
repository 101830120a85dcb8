"""One client per outside system (Salesforce, WHMCS, Freebit, Postgres, Redis); no Temporal here."""
