"""The REST API (/api/v1/): thin DRF views over orders.selectors and orders.services."""
