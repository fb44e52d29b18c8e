"""Storage backends: SQLite, InfluxDB 1.x (API v1) and InfluxDB 2.x+ (API v2)."""
