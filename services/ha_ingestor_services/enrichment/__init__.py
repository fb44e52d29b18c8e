"""The enrichment service: validate, add weather, normalize, then store."""
