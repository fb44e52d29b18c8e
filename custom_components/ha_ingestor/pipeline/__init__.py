"""The delivery core of HA Ingestor.

Shared by the Home Assistant integration (as ``custom_components.ha_ingestor.pipeline``)
and the companion services (as ``ha_ingestor_pipeline``). It imports nothing from Home
Assistant: only the standard library, aiohttp and orjson, and only relative imports
inside the package.
"""
