"""Start Arize Phoenix with its OTLP gRPC listener on loopback too (runs in .venvs/phoenix, imports no workshop code).

Phoenix 20.26 binds its gRPC collector to "[::]:<PHOENIX_GRPC_PORT>", every interface, whatever
PHOENIX_HOST says. The workshop keeps every local service on 127.0.0.1, so this launcher rewrites
that one address before `phoenix serve` starts. The HTTP server (UI, REST API, OTLP/HTTP on
/v1/traces) already follows PHOENIX_HOST.
"""

import os
import sys

import grpc.aio

_server = grpc.aio.server
HOST = os.environ.get("PHOENIX_GRPC_HOST", "127.0.0.1")


def loopback_server(*args, **kwargs):  # type: ignore[no-untyped-def]
    """grpc.aio.server whose ports listen on HOST instead of every interface."""
    server = _server(*args, **kwargs)
    for name in ("add_insecure_port", "add_secure_port"):
        original = getattr(server, name)

        def bound(address, *rest, _original=original):  # type: ignore[no-untyped-def]
            return _original(address.replace("[::]", HOST).replace("0.0.0.0", HOST), *rest)

        setattr(server, name, bound)
    return server


if __name__ == "__main__":
    grpc.aio.server = loopback_server
    from phoenix.server.main import main

    sys.argv = ["phoenix", "serve"]
    sys.exit(main())
