"""Write the Pub/Sub API stubs from `pubsub_api.proto`: `python -m wire.pubsub [DIRECTORY]`.

Run from anywhere after editing the `.proto`, and commit what it writes. The stubs import each
other as `wire.pubsub.…`, so the `.proto` is compiled from the project's root.
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent.parent
PROTO = PACKAGE / "pubsub_api.proto"
GENERATED = ("pubsub_api_pb2.py", "pubsub_api_pb2.pyi", "pubsub_api_pb2_grpc.py")


def generate(out: Path) -> None:
    """Compile the `.proto` into `out` (laid out as the project: out/wire/pubsub/…)."""
    from grpc_tools import protoc  # a development tool: only this command needs it

    (out / "wire" / "pubsub").mkdir(parents=True, exist_ok=True)
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={ROOT}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO.relative_to(ROOT)),
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed on {PROTO} (exit {code})")


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else ROOT
    generate(out)
    for name in GENERATED:
        print(out / "wire" / "pubsub" / name)


if __name__ == "__main__":
    main(sys.argv[1:])
