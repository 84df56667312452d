"""The simulator's answers on the wire: JSON in OpenAI's shapes, bad bodies, wrong methods and
paths, and what fault injection asks for: the connection dropped mid-body, a body spoilt."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .world import SimError

__all__ = [
    "DropResponse",
    "DroppedConnection",
    "by_method",
    "json_response",
    "not_found",
    "parse_body",
    "read_body",
]

_log = logging.getLogger("runfleet.sim")


class DroppedConnection(Exception):
    """Raised after the response head is sent, so the server closes the connection mid-body."""


class DropResponse(Response):
    """Send the head (with the full body's content-length), then fail instead of the body."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        raise DroppedConnection("connection dropped by the simulator's fault injection")


def json_response(
    status: int,
    body: dict[str, Any],
    headers: dict[str, str],
    cls: type[Response] = Response,
    spoil: Literal["malformed", "truncated"] | None = None,
) -> Response:
    """Answer with a compact JSON body, as OpenAI's servers send it (or spoilt, as asked)."""
    data = json.dumps(body, separators=(",", ":")).encode()
    if spoil == "malformed":
        data = b"{,," + data[1:]  # stray commas: no JSON parser reads past the first byte
    elif spoil == "truncated":
        # Cut, with a content-length that agrees: the read ends cleanly, only the parse fails.
        data = data[: len(data) // 2]
    return cls(data, status, headers, media_type="application/json")


async def parse_body(request: Request) -> dict[str, Any] | None:
    """Return the request's JSON object, or None; parsed once, for the gate and the handler.

    The gate needs the body before admission (the model for a 429's message, the text its
    tokens are charged for); a bad body is the handler's to refuse, after admission.
    """
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    request.state.sim_body = data
    return data


async def read_body(request: Request, allow_empty: bool = False) -> dict[str, Any]:
    """Return the request's JSON object, or raise the 400 OpenAI answers a bad body with."""
    parsed: dict[str, Any] | None = getattr(request.state, "sim_body", None)
    if parsed is not None:
        return parsed
    raw = await request.body()
    if not raw.strip() and allow_empty:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise SimError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
        ) from None
    if not isinstance(data, dict):
        raise SimError(400, "The request body must be a JSON object.")
    return data


def by_method(
    endpoints: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    """Route one path's requests by method; a wrong method or a simulator bug still gets an
    answer in OpenAI's shape."""

    async def dispatch(request: Request) -> Response:
        endpoint = endpoints.get(request.method)
        if endpoint is None:
            msg = f"Invalid method for URL ({request.method} {request.url.path})."
            return json_response(405, SimError(405, msg).body(), {"allow": ", ".join(endpoints)})
        try:
            return await endpoint(request)
        except Exception:
            # A bug of the simulator's own: still answer in OpenAI's shape, and say so.
            _log.exception("sim_internal_error")
            body = SimError(500, "The simulator failed on this request.", type="server_error")
            return json_response(500, body.body(), {})

    return dispatch


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer an unknown path as OpenAI does."""
    msg = f"Invalid URL ({scope.get('method', 'GET')} {scope.get('path', '')})."
    await json_response(404, SimError(404, msg).body(), {})(scope, receive, send)
