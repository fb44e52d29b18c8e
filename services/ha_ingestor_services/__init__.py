"""HA Ingestor's companion services: the enrichment service and the storage service.

Both are aiohttp servers that speak the contracts of docs/ARCHITECTURE.md ("Contracts")
and make every outbound call through the shared delivery core (`ha_ingestor_pipeline`).
Start them with the ``ha-ingestor-services`` console script (see
`ha_ingestor_services.cli`).
"""

__version__ = "0.1.0"
