"""`streamctl init`: copy the commented starter project (`scaffold/`) into a folder.

    created = init_project(Path("my-project"))          # raises ConfigError on clashes
    created = init_project(Path("my-project"), force=True)

The starter project validates as is and replays its own `events.ndjson` with no
credentials. Existing files are never overwritten unless `force` is given.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from streamctl.core.errors import UsageError

# Names that packaging would drop or that would hide in the package: renamed on copy.
RENAMES = {"gitignore": ".gitignore"}


def scaffold_files() -> dict[str, Traversable]:
    """The starter project's files, by their path inside the new project."""
    root = resources.files("streamctl.config").joinpath("scaffold")
    files: dict[str, Traversable] = {}
    pending: list[tuple[str, Traversable]] = [("", root)]
    while pending:
        prefix, folder = pending.pop()
        for item in folder.iterdir():
            if item.name == "__pycache__":
                continue
            relative = f"{prefix}{RENAMES.get(item.name, item.name)}"
            if item.is_dir():
                pending.append((f"{relative}/", item))
            else:
                files[relative] = item
    return dict(sorted(files.items()))


def init_project(target: Path, *, force: bool = False) -> list[Path]:
    """Write the starter project into `target` (created if needed); the files written."""
    files = scaffold_files()
    clashes = [name for name in files if (target / name).exists()]
    if clashes and not force:
        listing = ", ".join(clashes)
        msg = f"{target}: would overwrite {listing}; use --force to replace them"
        raise UsageError(msg)
    written: list[Path] = []
    for name, source in files.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(source.read_bytes())
        written.append(path)
    return written
