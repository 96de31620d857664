"""The ``server`` group: ``SERVERS`` (``registry.py``) and its options, each registered when
this package is imported: ``honest`` and the malicious ``imprint``."""

from gradinv_exp.servers import honest, imprint
from gradinv_exp.servers.registry import SERVERS, Server, ServerConfig, controlled, server

__all__ = ["SERVERS", "Server", "ServerConfig", "controlled", "honest", "imprint", "server"]
