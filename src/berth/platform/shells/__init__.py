"""Thin shells over the services: the HTTP API, its WebSocket feeds and the agents' gRPC service
translate their protocol and delegate; no behaviour lives here."""
