"""Adapters that implement core's ports: SQL (PostgreSQL, SQLite) and object stores."""
