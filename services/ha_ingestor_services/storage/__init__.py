"""The data storage service: idempotent, durable batches into SQLite or InfluxDB."""
