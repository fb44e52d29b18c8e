"""The storage service: idempotent, durable batches into SQLite or InfluxDB.

``create_app(StorageService(StorageSettings(...)), token=...)`` serves it
(`ha_ingestor_services.web`; the interface is `ha_ingestor_services.contract`). The
modules, one idea each:

- `settings`: the flat, checked settings the CLI fills in;
- `records`: an envelope as a stored record, a record as an answered event;
- `writer`: group commit, concurrent requests sharing one durable write;
- `query`: the parameters of ``GET /api/v1/events``;
- `backends`: SQLite, InfluxDB 1.x (API v1) and InfluxDB 2.x+ (API v2);
- `service`: the `EventService` tying them together.
"""
