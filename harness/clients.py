"""One client per transport, behind one interface, over the transport's codec.

    client = connect("grpc", "127.0.0.1:50051")     # any registered transport
    reply = client.predict("iris", rows)            # Reply: prediction, timings, bytes
    client.close()

Which client a transport gets is its wire's driver's choice (`harness/transports/`): one
ready gRPC channel, or one pooled keep-alive httpx client. Every foreign failure
(grpc.RpcError, an HTTP error status, a timeout, a refused connection) is raised as a
`wiremark.payloads.errors.WiremarkError` subclass, so callers handle one hierarchy whatever
the transport.
"""

from __future__ import annotations

from .transports import CONNECT_TIMEOUT, Client, Reply, connect

__all__ = ["CONNECT_TIMEOUT", "Client", "Reply", "connect"]
