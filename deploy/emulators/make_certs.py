"""TLS material for the demo's Salesforce emulator, for the name the engine dials in compose.

    python make_certs.py DIRECTORY NAME [NAME ...]

The emulator makes a certificate for 127.0.0.1 and localhost by itself, enough on one machine;
in docker-compose.yml the engine's containers reach it as `salesforce`. Run once before it (the
`emulator-certs` service of the `emulators` profile), this writes the files the emulator looks
for in its --certs-dir (a CA, the server certificate for NAMEs, the JWT bearer key pair), and
the emulator then uses them instead of making its own. Files already there are kept, so the
engine's trust and the JWT key survive restarts.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import trustme

from emulators.salesforce.tls import CertPaths, ensure_certs


def make_certs(directory: Path, names: Sequence[str]) -> CertPaths:
    directory.mkdir(parents=True, exist_ok=True)
    ca, server_cert, server_key = (
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
    )
    if not (ca.exists() and server_cert.exists() and server_key.exists()):
        authority = trustme.CA(organization_name="Fulfillment demo emulators")
        issued = authority.issue_cert(*names)
        issued.private_key_pem.write_to_path(str(server_key))
        server_key.chmod(0o600)
        server_cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        authority.cert_pem.write_to_path(str(ca))
    # Adds the JWT key pair; finds the three files above and keeps them.
    paths = ensure_certs(directory)
    if (paths.ca, paths.server_cert, paths.server_key) != (ca, server_cert, server_key):
        raise RuntimeError("the emulator looks for its TLS files under other names")
    return paths


def main(argv: Sequence[str]) -> int:
    if len(argv) < 2:
        print("usage: make_certs.py DIRECTORY NAME [NAME ...]", file=sys.stderr)
        return 2
    paths = make_certs(Path(argv[0]), argv[1:])
    print(f"emulator TLS files in {paths.ca.parent} for {', '.join(argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
