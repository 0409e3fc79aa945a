"""TLS for every transport: the certificates a run makes, and the trust its clients hold.

    certs = Certificates.make(folder)        # a throwaway CA (trustme) and a server cert
    serve_args = certs.serve_args()          # --tls-cert FILE --tls-key FILE
    trust = Trust(certs.ca)                  # what every client of the run verifies against

A bench cell with `tls = true` talks to a server started with the run's certificate, and
every client verifies it (the CA, and the address as an IP or DNS name in the certificate):
the lean HTTP/1.1 and HTTP/2 connections through `ssl_context()` (HTTP/2 offers ALPN
"h2", as gRPC requires), httpx with `verify=`, grpcio with the CA's PEM as root
certificates. `Trust(None)` is the machine's own CA store, for a `--target` that serves
a real certificate.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

# The names a certificate of a run holds: every loopback spelling a client may dial, and
# the addresses the multi-host tests give their namespaces are added by the caller.
LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class Certificates:
    """A CA and one server certificate signed by it, as PEM files in one folder."""

    ca: Path
    cert: Path  # the server's chain (leaf first)
    key: Path

    @classmethod
    def make(cls, folder: Path, names: tuple[str, ...] = LOOPBACK_NAMES) -> Certificates:
        """A fresh CA and a server certificate for `names` (IP addresses or host names),
        written to `folder` (trustme: the keys never leave the machine)."""
        import trustme

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="wiremark test CA")
        leaf = ca.issue_cert(*names)
        out = cls(folder / "ca.pem", folder / "server.pem", folder / "server.key")
        ca.cert_pem.write_to_path(str(out.ca))
        leaf.private_key_pem.write_to_path(str(out.key))
        with out.cert.open("wb") as chain:
            for blob in leaf.cert_chain_pems:
                chain.write(blob.bytes())
        out.key.chmod(0o600)
        return out

    def serve_args(self) -> list[str]:
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]


@dataclass(frozen=True)
class Trust:
    """What a client verifies a server's certificate against: a CA file, or (None) the
    machine's default store."""

    ca: Path | None = None

    def ssl_context(self, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        if alpn:
            context.set_alpn_protocols(list(alpn))
        return context

    def root_certificates(self) -> bytes | None:
        """The CA as grpcio's `ssl_channel_credentials` takes it (None: grpcio's own roots)."""
        return self.ca.read_bytes() if self.ca else None

    def grpc_credentials(self) -> object:
        import grpc

        return grpc.ssl_channel_credentials(root_certificates=self.root_certificates())


def wrap(sock: socket.socket, context: ssl.SSLContext, host: str) -> ssl.SSLSocket:
    """`sock` over TLS, the handshake done and the server verified as `host` (the socket is
    closed when that fails)."""
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise
