"""The Salesforce change-data-capture listener that starts fulfillment workflows."""
