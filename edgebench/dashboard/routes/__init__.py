"""The JSON API under /api/v1: `read` is open, `admin` needs the admin token."""
