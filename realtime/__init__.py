"""Live push: brokers, the local hub, WebSocket and SSE endpoints."""
