FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY core core
COPY storage storage
COPY realtime realtime
COPY egress egress
COPY api api
COPY providers providers
COPY background background
COPY commands commands
COPY asgi.py wiring.py cli.py config.py metrics.py ./
# the runtime and uvicorn's uvloop/httptools (the `serve` extra); no test or benchmark packages.
# tests/e2e/test_shipped_package.py installs exactly what is copied above into a clean venv and
# runs migrate, keys create and serve from it
RUN pip install --no-cache-dir ".[serve]"
EXPOSE 8000
# SIGTERM: streams close with 1012, in-flight requests finish, then the process exits
STOPSIGNAL SIGTERM
# api.serving:HttpToolsProtocol is uvicorn's httptools protocol with a deadline for request
# headers (CREDITSTREAM_HEADER_TIMEOUT_S, 10 s) and a cap on their size: silent or slow-header
# clients are cut off; idle keep-alive connections close after 5 s. api.ws_protocol is
# uvicorn's sans-I/O WebSocket protocol keeping less of each idle stream
CMD ["uvicorn", "asgi:app", "--host", "0.0.0.0", "--port", "8000", "--ws", "api.ws_protocol:WebSocketProtocol", \
     "--ws-per-message-deflate", "false", "--loop", "uvloop", \
     "--http", "api.serving:HttpToolsProtocol", "--timeout-keep-alive", "5", \
     "--timeout-graceful-shutdown", "20", "--proxy-headers", "--forwarded-allow-ips", "*"]
