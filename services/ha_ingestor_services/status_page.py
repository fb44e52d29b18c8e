"""The small HTML page each service serves at ``/``, without the token.

It is what Home Assistant's "Visit" link on the service's device opens. It shows
health's overall status (all the open health endpoint tells) and each dependency's name
with up or down: never a dependency's detail text, which can hold file paths, URLs or
upstream errors, nor the version or anything about the token. Every value is escaped,
and the response headers forbid scripts, external resources and caching.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from ha_ingestor_pipeline.envelope import (
    ENRICHMENT_SERVICE_NAME,
    HEALTH_PATH,
    OPENAPI_PATH,
    STORAGE_SERVICE_NAME,
)

# The page reloads itself this often. Each view runs the same checks as one call of
# the open health endpoint (storage's probe is cached for a few seconds).
REFRESH_S = 10

HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-store",
    # Inline style only: no scripts, images, fonts or anything fetched from elsewhere.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}

_ROLES = {
    STORAGE_SERVICE_NAME: "Data storage",
    ENRICHMENT_SERVICE_NAME: "Enrichment pipeline",
}

_MEANINGS = {
    "healthy": "Every dependency is up.",
    "degraded": "An optional dependency is down; events are still processed.",
    "unhealthy": "A required dependency is down; events are refused with 503 until it is back.",
}

_STYLE = """
:root { color-scheme: light dark; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; }
@media (prefers-color-scheme: dark) {
  :root { --ok: #3fb950; --warn: #d29922; --bad: #f85149; }
}
body { font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 2rem auto;
       padding: 0 1rem; }
h1 { font-size: 1.4rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.1rem; margin-top: 2rem; }
.role { margin-top: 0; opacity: 0.75; }
.verdict { font-size: 1.3rem; font-weight: 600; }
.healthy, .up { color: var(--ok); }
.degraded { color: var(--warn); }
.unhealthy, .down { color: var(--bad); }
table { border-collapse: collapse; }
th, td { text-align: left; padding: 0.2rem 1.5rem 0.2rem 0; }
code { font-size: 0.95em; }
.muted { opacity: 0.75; font-size: 0.9rem; }
"""


def role_of(service: str) -> str:
    """What the service is, for people: its role, else its name as health gives it."""
    return _ROLES.get(service, service)


def render(
    service: str,
    status: str,
    dependencies: Mapping[str, tuple[bool, bool]],
    produced_at: str,
) -> str:
    """The page: ``dependencies`` maps each name to (up, required)."""
    role = escape(role_of(service))
    verdict = escape(status)
    rows = "\n".join(
        f"<tr><td>{escape(name)}</td>"
        f'<td class="{"up" if up else "down"}">{"up" if up else "down"}</td>'
        f"<td>{'required' if required else 'optional'}</td></tr>"
        for name, (up, required) in sorted(dependencies.items())
    )
    meaning = escape(_MEANINGS.get(status, ""))
    # Links are relative, so they still work behind a reverse proxy under a path prefix.
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_S}">
<title>{role}: {verdict} · HA Ingestor</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{role}</h1>
<p class="role">HA Ingestor companion service <code>{escape(service)}</code></p>
<p class="verdict {verdict}">{verdict}</p>
<p>{meaning}</p>
<table>
<tr><th>Dependency</th><th>State</th><th>Needed</th></tr>
{rows}
</table>
<p class="muted">Checked at {escape(produced_at)}; this page reloads every {REFRESH_S} s.</p>
<h2>For operators</h2>
<ul>
<li>Health as JSON, no token needed:
<a href="{HEALTH_PATH[1:]}"><code>GET {HEALTH_PATH}</code></a>
(HTTP 503 while a required dependency is down; each dependency's detail with the
token).</li>
<li>Every other endpoint needs the API token:
<code>Authorization: Bearer &lt;token&gt;</code>.</li>
<li>API description (OpenAPI 3.1, with the token too): <code>GET {OPENAPI_PATH}</code>.</li>
</ul>
</body>
</html>
"""
