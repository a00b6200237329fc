"""The docs: the keys page lists exactly the command line's keys, every page is in the site's
navigation, the README stays short and its links lead somewhere, the benchmark figures exist,
and the text speaks of the product and its users."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from r21d_features.configs.schema import ALL_KEYS, PARTS, compose_values, help_footer, keys_markdown
from r21d_features.utils.core.settings import help_of, setting_fields
from tests.conftest import REPO_ROOT

DOCS = REPO_ROOT / "docs"
# Pages the docs build writes from the code (docs/gen_pages.py) rather than files in docs/.
GENERATED_PAGES = {"reference/keys.md"}
README_MAX_LINES = 200

# Phrases that describe how the work was organised rather than the product. Each is a regex,
# matched case-insensitively against every tracked text file.
ORGANISATION_PHRASES = (
    r"\bissues? ?#?\d+\b",
    r"\bthis (?:task|session)\b",
    r"\bthis machine\b",
    r"\bdevice machine\b",
    r"\bshared by (?:five|several|\d+) people\b",
    r"\bno GPU machine\b",
)
# (file, text on the line) pairs where a phrase is someone else's words, quoted on purpose.
QUOTED = (
    ("tests/test_ray_runner.py", "before finishing this task"),  # Ray's own message for a dead actor
)


def _key_rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells and cells[0].startswith("`") and cells[0].endswith("`"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_keys_page_lists_exactly_the_keys_the_command_line_takes():
    rows = _key_rows(keys_markdown("r21d"))
    assert sorted(rows) == sorted(ALL_KEYS)
    values, error = compose_values(["feature_type=r21d"])
    assert error is None and sorted(values) == sorted(rows), "the composed config and the keys page differ"
    in_help = [line.split()[0] for line in help_footer("r21d").splitlines()[1:] if line.startswith("  ")]
    assert sorted(in_help) == sorted(rows), "--help and the keys page differ"


def test_the_keys_page_gives_each_keys_default_and_help_text():
    rows = _key_rows(keys_markdown("r21d"))
    for f, _ in setting_fields(PARTS["r21d"]):
        assert help_of(f), f"{f.name} has no help text"
        _type, default, meaning = rows[f.name]
        want = "null" if f.default is None else str(f.default).lower() if isinstance(f.default, bool) else str(f.default)
        assert default == f"`{want}`", f.name
        assert meaning.replace("\\|", "|") == help_of(f), f.name


def test_the_docs_build_generates_the_keys_page_from_the_code():
    script = (DOCS / "gen_pages.py").read_text(encoding="utf-8")
    assert "keys_markdown" in script and '"reference/keys.md"' in script
    assert not (DOCS / "reference" / "keys.md").exists(), "a hand-written keys page would shadow the generated one"


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    return []


def test_every_docs_page_is_in_the_navigation_and_every_entry_exists():
    config = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["strict"] is True and config["docs_dir"] == "docs"
    nav = _nav_pages(config["nav"])
    assert len(nav) == len(set(nav)), "a page is listed twice"
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert set(nav) == on_disk | GENERATED_PAGES


def test_the_readme_is_short_and_its_links_lead_to_files_of_the_checkout():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    assert "bash scripts/run_samples.sh" in readme and "bash scripts/run_tests.sh" in readme
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if "://" not in t]
    assert local, "the README links into the docs"
    missing = [t for t in local if not (REPO_ROOT / t).exists()]
    assert missing == []


def test_the_benchmarks_page_shows_every_figure_the_figure_script_writes():
    from benchmarks.figures import FIGURE_NAMES

    page = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    for name in FIGURE_NAMES:
        assert f"(img/{name})" in page, name
        assert (DOCS / "img" / name).is_file(), name


def _tracked_text_files() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True,
                               timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    files = []
    for name in filter(None, names):
        path = REPO_ROOT / name
        if path.is_file() and not path.is_symlink() and b"\0" not in path.read_bytes()[:8192]:
            files.append(path)
    return files


def test_tracked_text_speaks_of_the_product_not_of_how_the_work_was_organised():
    pattern = re.compile("|".join(ORGANISATION_PHRASES), re.IGNORECASE)
    this_file = Path(__file__).resolve()
    found = []
    for path in _tracked_text_files():
        if path.resolve() == this_file:
            continue
        name = path.relative_to(REPO_ROOT).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            match = pattern.search(line)
            if match and not any(name == file and quote in line for file, quote in QUOTED):
                found.append(f"{name}:{number}: {match.group(0)!r} in {line.strip()[:120]!r}")
    assert found == []
