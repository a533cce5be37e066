"""Webhook specifications and the bounded notification queue (delivery: tests/integration/platform)."""

from __future__ import annotations

from berth.platform.services.notifications import (
    QUEUE_SIZE,
    Notification,
    Webhook,
    WebhookSender,
    parse_webhook,
)


async def test_the_queue_is_bounded_and_counts_what_it_drops() -> None:
    sender = WebhookSender([Webhook("http://127.0.0.1:9/none")], attempts=1, backoff_s=0.01)
    note = Notification(event="node.connected", text="x", data={}, at=0.0)
    for _ in range(QUEUE_SIZE + 3):
        sender.submit(note)  # not started: nothing is delivered, the queue fills up
    assert sender.dropped == 3
    assert WebhookSender([], 1, 0.1).dropped == 0


def test_webhook_specs() -> None:
    assert parse_webhook("https://hooks.example/x") == Webhook("https://hooks.example/x", "generic")
    assert parse_webhook("slack=https://hooks.example/x").shape == "slack"
    assert parse_webhook("discord=http://127.0.0.1:1/y").shape == "discord"
    for bad in ("ftp://x/y", "slack=", "nohost"):
        try:
            parse_webhook(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
