"""Prometheus metrics of one agent, in their own registry (no process-global state in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.session_accepted = Gauge(
            "berth_agent_session_accepted",
            "1 while the platform has accepted the agent's session",
            registry=self.registry,
        )
        self.session_connected = Gauge(
            "berth_agent_session_open", "1 while a Connect stream is open", registry=self.registry
        )
        self.reconnects = Counter(
            "berth_agent_reconnects", "Connect attempts after the first one", registry=self.registry
        )
        self.refusals = Counter(
            "berth_agent_token_refusals",
            "Tokens the platform refused",
            ["token_type"],
            registry=self.registry,
        )
        self.commands = Counter(
            "berth_agent_commands", "Commands handled", ["kind", "outcome"], registry=self.registry
        )
        self.command_seconds = Histogram(
            "berth_agent_command_duration_seconds",
            "Time to handle a command (streams: their whole life)",
            ["kind"],
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 15, 60, 300, 1800),
        )

    def command_finished(self, kind: str, outcome: str, duration_s: float) -> None:
        self.commands.labels(kind=kind, outcome=outcome).inc()
        self.command_seconds.labels(kind=kind).observe(duration_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
