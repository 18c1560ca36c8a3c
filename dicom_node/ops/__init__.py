"""Operator actions: what the CLI and the HTTP API let a person do to a running node."""
