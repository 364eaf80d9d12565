"""The node's HTTP API: the gateway's jobs, status and the operator's views."""
