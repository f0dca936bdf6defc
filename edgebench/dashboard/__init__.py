"""The dashboard: read-only HTML pages and the JSON API under /api/v1."""
