"""Torch-free code shared by the gateway and the workers: generated stubs, logging, tracing, health probe."""

__version__ = "0.1.0"
