"""The `fulfillment` command line."""
