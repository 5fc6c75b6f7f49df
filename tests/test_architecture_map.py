"""docs/architecture.md is the map: its tree names every module and folder, and the
source paths it names exist, so the map cannot drift from the code unnoticed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text()
PACKAGES = ("agentwatch", "ingest", "processors", "alerts", "dashboards")
# Top-level folders whose backticked paths in the document must exist.
SOURCE_ROOTS = (*PACKAGES, "tests", "bench", "docs")
# Entries of the tree start at indent 0, 2, 4, ...; their descriptions continue deeper.
ENTRY_MAX_INDENT = 8


def map_entries() -> dict[str, str]:
    """Each entry of the tree under "## The map" ("processors/store/", "agentwatch/cli.py")
    to its description, continuation lines included."""
    block = DOC.split("## The map", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    entries: dict[str, str] = {}
    folders: list[str] = []
    path = ""
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        if indent < ENTRY_MAX_INDENT:
            name, _, text = line.strip().partition(" ")
            folders = folders[: indent // 2]
            path = "".join(folders) + name
            if name.endswith("/"):
                folders.append(name)
            entries[path] = text
        else:
            entries[path] += " " + line.strip()
    return entries


def source_paths() -> list[Path]:
    """Every Python module (not ``__init__``) and every folder of the packages."""
    found: list[Path] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*")):
            parts = path.relative_to(ROOT).parts
            if any(part == "__pycache__" or part.startswith(".") for part in parts):
                continue
            if path.is_dir() or (path.suffix == ".py" and path.name != "__init__.py"):
                found.append(path.relative_to(ROOT))
    return found


def named_in_map(path: Path, entries: dict[str, str]) -> bool:
    """An entry of its own, or its name in its folder's description (folders as "name/")."""
    own = path.as_posix() + ("/" if (ROOT / path).is_dir() else "")
    if own in entries:
        return True
    folder_text = entries.get(path.parent.as_posix() + "/", "")
    if (ROOT / path).is_dir():
        return re.search(rf"(?<![\w/-]){re.escape(path.name)}/", folder_text) is not None
    return re.search(rf"\b{re.escape(path.stem)}\b", folder_text) is not None


def test_the_map_names_every_module_and_folder_in_its_folders_entry() -> None:
    entries = map_entries()
    missing = [path.as_posix() for path in source_paths() if not named_in_map(path, entries)]
    assert not missing, (
        "docs/architecture.md's map does not name these modules/folders (add each to its "
        "folder's entry, by its stem or as 'name/'):\n  " + "\n  ".join(missing)
    )


def test_every_source_path_the_document_names_exists() -> None:
    module_names = {path.name for path in source_paths()}
    stale: list[str] = []
    for token in sorted(set(re.findall(r"`([\w./-]+)`", DOC))):
        if "/" not in token:
            if token.endswith(".py") and token not in module_names:
                stale.append(token)
        elif token.split("/", 1)[0] in SOURCE_ROOTS and not (ROOT / token).exists():
            stale.append(token)
    assert not stale, "docs/architecture.md names paths that do not exist:\n  " + "\n  ".join(stale)
