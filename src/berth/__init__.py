"""Berth: a node agent for dyrector.io-compatible platforms, and a small embedded platform."""

__version__ = "0.1.0"
