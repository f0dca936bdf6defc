"""The `edgebench` command line."""
