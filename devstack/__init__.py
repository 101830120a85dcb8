"""The local stack behind `fulfillment dev`: embedded services, emulators and engine processes."""
