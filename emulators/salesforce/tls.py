"""Local key material in one directory: a CA and the server certificate it signs, plus the RSA
key pair that signs JWT bearer assertions.

Everything is generated once and reused, so a client that trusts `ca.pem` keeps trusting the
emulator across restarts (`fulfillment dev` keeps the directory under `.dev/certs/`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEFAULT_CERTS_DIR = Path(".dev/certs")


@dataclass(frozen=True)
class CertPaths:
    ca: Path
    server_cert: Path
    server_key: Path
    jwt_private_key: Path
    jwt_public_key: Path


def ensure_certs(directory: Path | str = DEFAULT_CERTS_DIR) -> CertPaths:
    """The certificate files under `directory`, created the first time."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(
        ca=root / "ca.pem",
        server_cert=root / "server.pem",
        server_key=root / "server.key",
        jwt_private_key=root / "jwt-private.pem",
        jwt_public_key=root / "jwt-public.pem",
    )
    if not (paths.ca.exists() and paths.server_cert.exists() and paths.server_key.exists()):
        authority = trustme.CA(organization_name="Fulfillment Salesforce Emulator")
        issued = authority.issue_cert("127.0.0.1", "localhost", "::1")
        issued.private_key_pem.write_to_path(str(paths.server_key))
        paths.server_cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        authority.cert_pem.write_to_path(str(paths.ca))
        paths.server_key.chmod(0o600)
    if not (paths.jwt_private_key.exists() and paths.jwt_public_key.exists()):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        paths.jwt_private_key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        paths.jwt_private_key.chmod(0o600)
        paths.jwt_public_key.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return paths
