FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY core core
COPY storage storage
COPY realtime realtime
COPY api api
COPY providers providers
COPY asgi.py cli.py config.py metrics.py sweeper.py ./
RUN pip install --no-cache-dir . uvloop httptools
EXPOSE 8000
# SIGTERM: streams close with 1012, in-flight requests finish, then the process exits
STOPSIGNAL SIGTERM
CMD ["uvicorn", "asgi:app", "--host", "0.0.0.0", "--port", "8000", "--ws", "websockets", \
     "--ws-per-message-deflate", "false", "--loop", "uvloop", "--http", "httptools", \
     "--timeout-graceful-shutdown", "20", "--proxy-headers", "--forwarded-allow-ips", "*"]
