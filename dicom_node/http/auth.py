"""Bearer-token check for the endpoints that change something (when ``http.token`` is configured).

Read-only endpoints stay open (health probes, Prometheus, the dashboard's views). The comparison is
constant-time; a missing or wrong token is 401 with ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

from dicom_node.http.context import context_of


def require_token(request: Request) -> None:
    """FastAPI dependency: 401 unless the request carries the configured bearer token."""
    token = context_of(request).settings.token
    if token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(
            401,
            "this endpoint needs the node's bearer token (Authorization: Bearer ...)",
            headers={"WWW-Authenticate": "Bearer"},
        )
