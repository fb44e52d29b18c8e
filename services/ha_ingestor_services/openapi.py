"""The OpenAPI 3.1 document each service serves at ``/api/v1/openapi.json``.

The shared routes (events, health, the status page, stats, metrics, this document) and
the wire formats of the contract (docs/ARCHITECTURE.md, "Contracts") are described here
once; a service adds the path items of its own routes.
Tests check that the document and the routes the server really has agree.
"""

from __future__ import annotations

from typing import Any

from ha_ingestor_pipeline.envelope import (
    BATCH_PATH,
    EVENTS_PATH,
    HEALTH_PATH,
    OPENAPI_PATH,
    STATS_PATH,
)

_JSON = "application/json"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {_JSON: {"schema": schema}}


def error_responses(*statuses: int) -> dict[str, Any]:
    """The standard error body for each of ``statuses``."""
    reasons = {
        400: "Malformed request (not JSON, bad parameter)",
        401: "No bearer token, or a malformed Authorization header",
        403: "Wrong bearer token",
        408: "The body did not arrive in time",
        413: "Body or batch over the limit",
        415: "The body is not sent as JSON (application/json), or in an unknown encoding",
        422: "Schema error",
        503: "A dependency is down, or too much work is waiting; retry after Retry-After seconds",
    }
    return {
        str(status): {"description": reasons[status], "content": json_content(ref("ErrorResponse"))}
        for status in statuses
    }


_SECURED_ERRORS = (401, 403)

_SCHEMAS: dict[str, Any] = {
    "Envelope": {
        "type": "object",
        "required": ["event_id", "timestamp", "data"],
        "properties": {
            "event_id": {"type": "string", "minLength": 1, "maxLength": 128},
            "timestamp": {"type": "string", "format": "date-time"},
            "source": {"type": "string"},
            "correlation_id": {"type": ["string", "null"]},
            "data": {
                "type": "object",
                "required": ["event_type"],
                "properties": {
                    "event_type": {"type": "string", "minLength": 1, "maxLength": 255},
                    "entity_id": {"type": "string", "pattern": "^[^. ]+\\.[^ ]+$"},
                    "state": {"type": ["string", "null"]},
                    "old_state": {"type": ["string", "null"]},
                    "attributes": {"type": "object"},
                    "context": {"type": ["object", "null"]},
                    "data": {"type": "object"},
                },
            },
            "context": {
                "type": ["object", "null"],
                "properties": {
                    "instance_id": {"type": ["string", "null"]},
                    "location": {
                        "type": ["object", "null"],
                        "properties": {
                            "latitude": {"type": ["number", "null"], "minimum": -90, "maximum": 90},
                            "longitude": {
                                "type": ["number", "null"],
                                "minimum": -180,
                                "maximum": 180,
                            },
                            "elevation": {"type": ["number", "null"]},
                            "time_zone": {"type": ["string", "null"]},
                        },
                    },
                    "weather": {"type": ["object", "null"]},
                },
            },
        },
    },
    "Batch": {
        "type": "object",
        "required": ["events"],
        "properties": {
            "events": {"type": "array", "minItems": 1, "items": ref("Envelope")},
            "correlation_id": {"type": "string"},
        },
    },
    "ErrorInfo": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string"},
            "message": {"type": "string"},
            "details": {"type": "object"},
        },
    },
    "EventResult": {
        "type": "object",
        "required": ["event_id", "status"],
        "properties": {
            "event_id": {"type": "string"},
            "status": {"enum": ["stored", "duplicate", "rejected"]},
            "error": ref("ErrorInfo"),
        },
    },
    "BatchResponse": {
        "type": "object",
        "required": ["success", "processed_at", "results"],
        "properties": {
            "success": {"const": True},
            "processed_at": {"type": "string", "format": "date-time"},
            "processing_time_ms": {"type": "number"},
            "correlation_id": {"type": "string"},
            "metadata": {"type": "object"},
            "results": {"type": "array", "items": ref("EventResult")},
        },
    },
    "ErrorResponse": {
        "type": "object",
        "required": ["success", "error", "timestamp"],
        "properties": {
            "success": {"const": False},
            "error": ref("ErrorInfo"),
            "timestamp": {"type": "string", "format": "date-time"},
            "correlation_id": {"type": ["string", "null"]},
        },
    },
    "Health": {
        "type": "object",
        # Without the token only status and service; the rest with it.
        "required": ["status", "service"],
        "properties": {
            "status": {"enum": ["healthy", "degraded", "unhealthy"]},
            "service": {"type": "string"},
            "version": {"type": "string"},
            "uptime_s": {"type": "number"},
            "timestamp": {"type": "string", "format": "date-time"},
            "dependencies": {"type": "object"},
        },
    },
}


def _post_events(summary: str, body_schema: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": json_content(ref(body_schema))},
            "responses": {
                "200": {
                    "description": "One result per event",
                    "content": json_content(ref("BatchResponse")),
                },
                **error_responses(400, *_SECURED_ERRORS, 408, 413, 415, 422, 503),
            },
        }
    }


def _shared_paths() -> dict[str, Any]:
    return {
        "/": {
            "get": {
                "summary": "A status page for people: the health verdict as HTML (no token needed)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "HTML page, whatever the status it shows",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        EVENTS_PATH: _post_events("Process one event envelope", "Envelope"),
        BATCH_PATH: _post_events("Process a batch of event envelopes", "Batch"),
        HEALTH_PATH: {
            "get": {
                "summary": "The service's status (no token needed); with the token also "
                "the version, uptime and each dependency's state and detail",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Healthy or degraded",
                        "content": json_content(ref("Health")),
                    },
                    "503": {
                        "description": "A required dependency is down",
                        "content": json_content(ref("Health")),
                    },
                },
            }
        },
        STATS_PATH: {
            "get": {
                "summary": "Counters, rates and latency percentiles",
                "responses": {
                    "200": {"description": "Figures", "content": json_content({"type": "object"})},
                    **error_responses(*_SECURED_ERRORS),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **error_responses(*_SECURED_ERRORS),
                },
            }
        },
        OPENAPI_PATH: {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": json_content({"type": "object"}),
                    },
                    **error_responses(*_SECURED_ERRORS),
                },
            }
        },
    }


def _merge_paths(shared: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Both sets of path items; a path in both keeps the methods of each."""
    paths = dict(shared)
    for path, item in extra.items():
        paths[path] = {**paths.get(path, {}), **item}
    return paths


def build_document(service: str, version: str, extra_paths: dict[str, Any]) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": f"HA Ingestor {service}", "version": version},
        "paths": _merge_paths(_shared_paths(), extra_paths),
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
