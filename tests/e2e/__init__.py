"""End-to-end tests: a real Home Assistant process, the services and SQLite."""
