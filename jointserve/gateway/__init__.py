"""Ray Serve ingress: the server-wide OIP routes (and, with joint inference, one logical model)."""

from ._server import OipServer, ServerConfig, build_app

__all__ = ["OipServer", "ServerConfig", "build_app"]
