"""Regenerate (or check) the Python code that protoc makes from protos/rainbow.proto.

    python protos/generate.py          # rewrite rainbow_aio/_proto/rainbow_pb2*.py(i)
    python protos/generate.py --check  # exit 1 if the committed files are stale

The proto is compiled under the virtual path ``rainbow_aio/_proto/rainbow.proto`` so
that the generated stub module imports its messages as ``rainbow_aio._proto.rainbow_pb2``
without any ``sys.path`` tricks. The output depends on the grpcio-tools version; the
pinned version lives in tox.ini (``GRPCIO_TOOLS``), and pyproject's lower bounds for
grpcio and protobuf are the versions that generation requires.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "protos" / "rainbow.proto"
PACKAGE_DIR = ROOT / "rainbow_aio" / "_proto"
GENERATED = ("rainbow_pb2.py", "rainbow_pb2.pyi", "rainbow_pb2_grpc.py")


def generate(out_root: Path) -> None:
    from grpc_tools import protoc  # imported late: only this tool needs grpcio-tools

    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-Irainbow_aio/_proto={PROTO.parent}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        str(PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the message above")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh_dir = Path(tmp) / "rainbow_aio" / "_proto"
        stale = []
        for name in GENERATED:
            fresh = (fresh_dir / name).read_text()
            target = PACKAGE_DIR / name
            current = target.read_text() if target.exists() else ""
            if fresh == current:
                continue
            if opts.check:
                stale.append(name)
                sys.stdout.writelines(
                    difflib.unified_diff(
                        current.splitlines(keepends=True),
                        fresh.splitlines(keepends=True),
                        f"committed/{name}",
                        f"generated/{name}",
                        n=1,
                    )
                )
            else:
                target.write_text(fresh)
                print(f"wrote {target.relative_to(ROOT)}")
    if stale:
        print(f"stale generated code: {', '.join(stale)}; run: python protos/generate.py")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
