"""The stack file format lives in ``berth.stackfile`` (the console reads pasted stacks too)."""

from berth.stackfile import (
    MAX_STACK_BYTES,
    Stack,
    StackError,
    StackInstance,
    StackRegistry,
    load_stack,
    parse_stack,
)

__all__ = [
    "MAX_STACK_BYTES",
    "Stack",
    "StackError",
    "StackInstance",
    "StackRegistry",
    "load_stack",
    "parse_stack",
]
