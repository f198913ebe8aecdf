"""The operator console (`GET /console`, on with CREDITSTREAM_CONSOLE=1): a page and its JSON
API under /console/api/ (`routes`), authenticated by a session cookie that only a one-time link
from `creditstream console` opens. Not part of the /v1 table nor of the OpenAPI document: it is
the operators' tool, not the product's API."""
