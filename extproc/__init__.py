"""AI gateway ext_proc sidecar for Envoy."""

__version__ = "0.1.0"
