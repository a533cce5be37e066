"""The agent's metrics: plain counters kept by the agent, exposed in the Prometheus text format
through ``prometheus_client`` only when the metrics endpoint is rendered (the client library and
its HTTP stack cost ≈14 MB of resident memory an agent without an endpoint need not pay)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

from berth.runtimes.base import DiskFigures

BUCKETS_S: Final = (0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 15.0, 60.0, 300.0, 1800.0)


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS_S) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.sum += value
        for index, bound in enumerate(BUCKETS_S):
            if value <= bound:
                self.counts[index] += 1
                return
        self.counts[-1] += 1

    def cumulative(self) -> list[tuple[str, float]]:
        total = 0
        result = []
        for bound, count in zip((*BUCKETS_S, float("inf")), self.counts, strict=True):
            total += count
            result.append(("+Inf" if bound == float("inf") else str(bound), float(total)))
        return result


class AgentMetrics:
    def __init__(self) -> None:
        self.session_open = False
        self.session_accepted = False
        self.reconnects = 0
        self.refusals: dict[str, int] = {}
        self.commands: dict[tuple[str, str], int] = {}
        self._durations: dict[str, _Histogram] = {}
        self.disk: Callable[[], DiskFigures] | None = None  # set when the runtime watches its disk

    def command_finished(self, kind: str, outcome: str, duration_s: float) -> None:
        self.commands[(kind, outcome)] = self.commands.get((kind, outcome), 0) + 1
        self._durations.setdefault(kind, _Histogram()).observe(duration_s)

    def count(self, kind: str, outcome: str) -> int:
        return self.commands.get((kind, outcome), 0)

    def token_refused(self, token_type: str) -> None:
        self.refusals[token_type] = self.refusals.get(token_type, 0) + 1

    def _families(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        yield GaugeMetricFamily(
            "berth_agent_session_open", "1 while a Connect stream is open", value=float(self.session_open)
        )
        yield GaugeMetricFamily(
            "berth_agent_session_accepted",
            "1 while the platform has accepted the agent's session",
            value=float(self.session_accepted),
        )
        yield CounterMetricFamily(
            "berth_agent_reconnects", "Connect attempts after the first one", value=float(self.reconnects)
        )
        refusals = CounterMetricFamily(
            "berth_agent_token_refusals", "Tokens the platform refused", labels=["token_type"]
        )
        for token_type, value in sorted(self.refusals.items()):
            refusals.add_metric([token_type], float(value))
        yield refusals
        commands = CounterMetricFamily("berth_agent_commands", "Commands handled", labels=["kind", "outcome"])
        for (kind, outcome), value in sorted(self.commands.items()):
            commands.add_metric([kind, outcome], float(value))
        yield commands
        durations = HistogramMetricFamily(
            "berth_agent_command_duration_seconds",
            "Time to handle a command (streams: their whole life)",
            labels=["kind"],
        )
        for kind, histogram in sorted(self._durations.items()):
            durations.add_metric([kind], histogram.cumulative(), sum_value=histogram.sum)
        yield durations
        if self.disk is not None:
            figures = self.disk()
            if figures.free_bytes is not None:
                yield GaugeMetricFamily(
                    "berth_node_disk_free_bytes",
                    "Free bytes of the container engine's data root",
                    value=float(figures.free_bytes),
                )
            yield CounterMetricFamily(
                "berth_node_pruned_image_bytes",
                "Bytes freed by pruning superseded images",
                value=float(figures.pruned_bytes_total),
            )

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        metrics = self

        class _Collector:
            def collect(self) -> Iterator[Any]:
                return metrics._families()

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector())
        return bytes(generate_latest(registry))
