"""The enrichment pipeline: validate, add weather, normalize, then store."""
