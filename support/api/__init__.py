"""The tickets part of the REST API (/api/v1/tickets/): serializers and views, routed by
`support.api_urls`. Conventions, errors, idempotency and throttling are the orders API's."""
