"""The thin HTTP API for the portal's reads and the operators' actions."""
