"""`GET /v1/stream`: the WebSocket protocol of SPEC §4. The endpoint checks the origin,
authenticates and admits the connection, then runs its session (realtime/websocket_session.py);
what the frames say is realtime/websocket_frames.py.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

import metrics
from realtime import gc_policy
from realtime.streams import CLOSE_BAD_MESSAGE, CLOSE_BAD_TOKEN, Realtime, StreamAuthError
from realtime.websocket_frames import close_for_error
from realtime.websocket_session import StreamSession


async def stream_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The endpoint as a bare ASGI app, for a server that routes streams past its middleware."""
    await stream_endpoint(WebSocket(scope, receive, send))


async def stream_endpoint(websocket: WebSocket) -> None:
    realtime: Realtime = websocket.app.state.realtime
    if not realtime.origin_allowed(websocket) or realtime.shutting_down.is_set():
        await websocket.close(code=CLOSE_BAD_MESSAGE)  # before accept: a 403 at the handshake
        return
    await websocket.accept()
    try:
        viewer = await realtime.config.authenticate(websocket)
    except StreamAuthError as exc:
        await websocket.close(code=CLOSE_BAD_TOKEN, reason=exc.code)
        return
    except Exception as exc:  # the key lookup needs the database
        code, reason = close_for_error(exc, "authenticating a stream")
        await websocket.close(code=code, reason=reason)
        return
    if not realtime.admit(viewer):
        await websocket.close(code=CLOSE_BAD_MESSAGE, reason="too_many_connections")
        return
    session = StreamSession(websocket, realtime, viewer)
    realtime.connections.add(session)
    metrics.CONNECTIONS.inc()
    gc_ticket = gc_policy.stream_opened()
    try:
        await session.run()
    finally:
        metrics.CONNECTIONS.dec()
        gc_policy.stream_closed(gc_ticket)  # before any await: counted however the stream ends
        realtime.connections.discard(session)
        realtime.release(session.viewer)
        await session.cleanup()
