"""What an operator does to a running node (retry, resend, rerun): one implementation shared by the
CLI commands and the HTTP API."""
