"""Plain SQL migrations, applied in file-name order by `fulfillment migrate`."""
