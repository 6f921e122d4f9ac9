"""Generate the Python modules of the gRPC API from the .proto files beside them.

    python scripts/gen_proto.py          # rewrite src/stateset_sequencer/proto/*_pb2*
    python scripts/gen_proto.py --check  # exit 1 if the committed modules are not current

``make proto`` runs the first. protoc writes ``import sequencer_v2_pb2`` (a top-level
name) into the service modules; they live in a package here, so that line is rewritten to
a relative import. The output is deterministic for a given grpcio-tools and mypy-protobuf
(both pinned in constraints.txt), which is what lets the check compare bytes.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTO_DIR = Path(__file__).resolve().parent.parent / "src" / "stateset_sequencer" / "proto"
PROTOS = ("sequencer.proto", "sequencer_v2.proto")
_TOP_LEVEL_IMPORT = re.compile(r"^import (sequencer\w*_pb2) as", re.MULTILINE)


def generate(out: Path) -> list[Path]:
    """Compile every proto into ``out``; the written files, sorted."""
    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    bindir = Path(sys.executable).parent  # mypy-protobuf's plugins, installed beside us
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *(str(PROTO_DIR / name) for name in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = sorted(p for p in out.iterdir() if p.name.endswith((".py", ".pyi")))
    for path in written:
        text = path.read_text(encoding="utf-8")
        fixed = _TOP_LEVEL_IMPORT.sub(r"from . import \1 as", text)
        if fixed != text:
            path.write_text(fixed, encoding="utf-8")
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        written = generate(Path(tmp))
        if options.check:
            stale = [
                p.name
                for p in written
                if not (PROTO_DIR / p.name).exists()
                or not filecmp.cmp(p, PROTO_DIR / p.name, shallow=False)
            ]
            if stale:
                print(
                    f"generated gRPC modules are not current: {', '.join(stale)}; "
                    "run `make proto` and commit the result",
                    file=sys.stderr,
                )
                return 1
            return 0
        for path in written:
            shutil.copyfile(path, PROTO_DIR / path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
