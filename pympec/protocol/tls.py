"""TLS for a cluster started with ``--tls``: a self-signed certificate, pinned.

    controller -> client    b"PYMPECTL"          in the clear: "TLS follows"
    client <-> controller   TLS 1.3 handshake    the client checks that the certificate's
                                                 SHA-256 is the connection file's tls_fingerprint
    then, inside TLS, pympec's own handshake, its proofs bound to the certificate
    (pympec.protocol.handshake), and messages without pympec's own tags (wire.NO_TAGS):
    TLS's records carry theirs (docs/security.md says why that loses nothing)

The controller makes a new key pair and certificate each time it starts
(:func:`server_context`); the certificate's fingerprint goes in the connection file
beside the key, so no certificate authority is involved: the client trusts exactly that
certificate (:func:`wrap_client`).  The first 8 bytes in the clear let a client that
expects TLS and a controller that does not (or the reverse) fail at once with a clear
error instead of waiting out a timeout; they cannot downgrade anything, since the
client's mode comes from its connection file, never from the wire.

The controller's side of the TLS handshake runs non-blocking in its loop
(:mod:`pympec.controller.door`); making the certificate needs the ``cryptography``
package (``pip install pympec[fast]``), the client only the standard ``ssl`` module.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import socket
import ssl
import tempfile
from typing import NamedTuple

from ..errors import ClusterError, SecurityError
from .handshake import GREETING, TLS_GREETING, recv_exactly

MISSING = ("--tls needs the cryptography package to make the controller's certificate: "
           "pip install pympec[fast]")


def available() -> bool:
    """Whether this process can make a certificate (the ``cryptography`` package)."""
    try:
        import cryptography.x509  # noqa: F401
    except ImportError:
        return False
    return True


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, as 64 hex digits."""
    return hashlib.sha256(der).hexdigest()


def certificate(name: str) -> tuple[bytes, str]:
    """A new self-signed certificate for ``name`` (an ECDSA P-256 key); returns (PEM of
    the certificate and its private key, fingerprint).  Raises RuntimeError naming
    ``pip install pympec[fast]`` when ``cryptography`` is missing."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise RuntimeError(MISSING) from None
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    return pem, fingerprint(cert.public_bytes(serialization.Encoding.DER))


class ServerTLS(NamedTuple):
    """The controller's TLS: its context, and its certificate's SHA-256 (hex)."""
    context: ssl.SSLContext
    fingerprint: str


def server_context(name: str) -> ServerTLS:
    """The controller's TLS context, on a new certificate for ``name``, and the
    certificate's fingerprint.  The private key touches the disk only for the moment
    ``ssl`` loads it, in a private (0700) temporary directory.  Raises RuntimeError when
    ``cryptography`` is missing."""
    pem, digest = certificate(name)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.num_tickets = 0   # no session resumption: every connection shows the certificate
    with tempfile.TemporaryDirectory(prefix="pympec-tls-") as private:
        path = os.path.join(private, "controller.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        context.load_cert_chain(path)
    return ServerTLS(context, digest)


def client_context() -> ssl.SSLContext:
    """The client's TLS context: TLS 1.3, no certificate authority; the certificate is
    checked against its pinned fingerprint after the TLS handshake (:func:`wrap_client`).
    The TLS handshake still makes the controller prove that it holds the certificate's
    private key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def wrap_client(sock: socket.socket, pinned: str, timeout: float,
                where: str = "the controller") -> ssl.SSLSocket:
    """Run TLS on a freshly connected socket, pinned to the certificate whose SHA-256
    is ``pinned``; returns the TLS socket (blocking, with ``timeout``), on which
    pympec's own handshake goes next.  Blocks for at most ``timeout`` per read.

    Raises SecurityError when the controller does not use TLS or shows another
    certificate, and ClusterError when the peer is not a pympec controller, the TLS
    handshake fails or nothing comes in time.  ``where`` names the controller in errors.
    """
    sock.settimeout(timeout)
    try:
        first = recv_exactly(sock, len(TLS_GREETING))
        if first == GREETING:
            raise SecurityError(
                f"{where} does not use TLS, but the connection file pins a TLS certificate "
                f"(tls_fingerprint): refusing to talk to it in the clear. The connection file "
                f"may be another cluster's, or someone in between strips TLS")
        if first != TLS_GREETING:
            raise ClusterError(f"{where} is not a pympec controller (bad greeting)")
        tls = client_context().wrap_socket(sock)   # the TLS handshake, with the timeout
    except socket.timeout:
        raise ClusterError(f"no TLS handshake from {where} within {timeout:g} s") from None
    except ssl.SSLError as e:
        raise ClusterError(f"the TLS handshake with {where} failed: {e}") from None
    shown = fingerprint(tls.getpeercert(binary_form=True) or b"")
    if shown != pinned.lower():
        tls.close()
        raise SecurityError(
            f"{where} shows a TLS certificate with SHA-256 fingerprint {shown}, not the "
            f"{pinned} pinned in the connection file: refusing it (another cluster's "
            f"controller, or someone in between)")
    return tls
