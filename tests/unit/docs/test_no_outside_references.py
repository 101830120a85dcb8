"""No tracked file points outside the repository.

The design contract lives in `docs/design.md`; a path into the planning workspace (its
DESIGN.md, its reference notes, an absolute path of the machine that wrote the file) means
nothing to a reader of this repository. Applied migrations are immutable and checksummed, so
`migrations/*.sql` keep their comments as they are; recorded workflow histories
(`tests/histories/`) are data captured from a run, whose stack traces name the recording
machine's paths, and are left as recorded.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# (what, pattern): each names what is wrong with a match, for the failure list.
OUTSIDE = (
    ("the planning workspace", re.compile(r"\.\./shared\b|\bshared/DESIGN\.md")),
    ("an absolute path of the workspace", re.compile(r"/work/")),
    (
        "the outside protocol notes",
        re.compile(r"\breference/protocols\.md|(?<![\w/])protocols\.md"),
    ),
    # docs/design.md is ours; the upper-case DESIGN.md is the outside original.
    ("DESIGN.md (ours is docs/design.md)", re.compile(r"(?<!docs/)\bDESIGN\.md")),
)


def _skipped(path: str) -> bool:
    return (
        (path.startswith("migrations/") and path.endswith(".sql"))
        or path.startswith("tests/histories/")
        or path == "tests/unit/docs/test_no_outside_references.py"
    )


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    files = []
    for name in filter(None, listed.split("\0")):
        if _skipped(name):
            continue
        path = ROOT / name
        if not path.is_file():  # deleted in the work tree, not yet committed
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        files.append(path)
    return files


def outside_references() -> list[str]:
    found = []
    for path in _tracked_text_files():
        text = path.read_text(errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for what, pattern in OUTSIDE:
                if pattern.search(line):
                    where = f"{path.relative_to(ROOT)}:{number}"
                    found.append(f"{where}: {what}: {line.strip()[:120]}")
    return found


def test_no_tracked_file_refers_outside_the_repository() -> None:
    found = outside_references()
    assert not found, (
        f"{len(found)} reference(s) outside the repository; point them at docs/design.md "
        "(the contract), docs/setup-upstreams.md (what each upstream needs) or the module "
        "that holds the fact:\n" + "\n".join(found)
    )


def test_the_patterns_tell_ours_from_theirs() -> None:
    def hits(line: str) -> bool:
        return any(pattern.search(line) for _, pattern in OUTSIDE)

    assert not hits("the contract is docs/design.md ([design.md](design.md))")
    assert not hits("see docs/design.md, 'Error codes'")
    assert hits("see ../shared/DESIGN.md")
    assert hits('"""The closed list (DESIGN.md, "Error codes")."""')
    assert hits("wire facts: reference/protocols.md")
    assert hits("(see protocols.md)")
    assert hits('File "/work/main/.venv/lib/python3.11/x.py"')
