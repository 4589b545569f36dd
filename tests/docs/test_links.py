"""Every relative link and image of README.md and docs/**/*.md resolves inside the repository.

A link is `[text](target)`, `![alt](target)`, a reference definition `[name]: target`, or an
HTML `href`/`src`; code (fenced blocks and inline spans) is not read. A target with a scheme
(`https:`, `mailto:`) is external and not followed; any other target must name a file or
folder of the repository (never one outside it, such as a sibling of the checkout), and its `#anchor`
must be a heading of the target Markdown file (GitHub's slugs). The card templates under
docs/models/templates/ are checked through the cards rendered from them (test_model_cards).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = REPO_ROOT / "docs" / "models" / "templates"

OUTSIDE = "/".join(["..", "outside", "API.md"])  # a path beside the checkout, for the checker's own test
FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]*(?:\([^()\s]*\)[^()\s<>]*)*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    files = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
    return [path for path in files if TEMPLATES not in path.parents]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code removed."""
    lines, fenced = [], None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        match = FENCE.match(stripped)
        if match:
            if fenced is None:
                fenced = match[1]
            elif stripped.startswith(fenced):
                fenced = None
            continue
        if fenced is None:
            lines.append((number, INLINE_CODE.sub("", line)))
    return lines


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        found += [(number, target) for target in INLINE_LINK.findall(line)]
        found += [(number, target) for target in HTML.findall(line)]
        reference = REFERENCE.match(line)
        if reference:
            found.append((number, reference[1]))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower-cased, punctuation dropped
    (but hyphens and underscores), spaces as hyphens."""
    text = INLINE_LINK.sub(lambda m: re.sub(r"^!?\[|\]\(.*$", "", m[0]), heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    text = path.read_text(encoding="utf-8")
    fenced = None
    for line in text.splitlines():
        stripped = line.lstrip()
        match = FENCE.match(stripped)
        if match:
            fenced = match[1] if fenced is None else (None if stripped.startswith(fenced) else fenced)
            continue
        heading = HEADING.match(line) if fenced is None else None
        if heading:
            base = slug(heading[2])
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    result |= set(re.findall(r"""<a\s+(?:name|id)\s*=\s*["']([^"']+)["']""", text))
    return result


def problems(path: Path, root: Path = REPO_ROOT) -> list[str]:
    root = root.resolve()
    found = []
    for number, target in links(path):
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not target or SCHEME.match(target) or target.startswith("//"):
            continue  # external (or empty, which Markdown renders as text)
        file_part, _, anchor = target.partition("#")
        if file_part.startswith("/"):
            found.append(f"{where}: absolute path (GitHub resolves it against the site, not the repository)")
            continue
        destination = path.resolve() if not file_part else (path.parent / unquote(file_part)).resolve()
        if destination != root and root not in destination.parents:
            found.append(f"{where}: leaves the repository")
            continue
        if not destination.exists():
            found.append(f"{where}: no such file")
            continue
        if anchor and destination.is_file() and destination.suffix == ".md" and unquote(anchor) not in anchors(destination):
            found.append(f"{where}: no heading with the anchor #{anchor} in {destination.relative_to(root)}")
    return found


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_every_link_resolves_inside_the_repository(path: Path):
    found = problems(path)
    assert not found, "broken links:\n" + "\n".join(found)


def test_the_readme_links_every_docs_page():
    readme = {(REPO_ROOT / target.partition("#")[0]).resolve()
              for _, target in links(REPO_ROOT / "README.md") if not SCHEME.match(target)}
    missing = [str(page.relative_to(REPO_ROOT)) for page in markdown_files()[1:] if page.resolve() not in readme]
    assert not missing, f"README.md's table of contents does not link: {', '.join(missing)}"



def test_the_checker_finds_what_it_must(tmp_path: Path):
    """The checker itself: code is skipped, anchors follow GitHub, leaving the repository fails."""
    assert slug("POST /generate-music/midi") == "post-generate-musicmidi"
    assert slug("Connections (`service/http.py`)") == "connections-servicehttppy"
    assert slug("Export: versions and checks") == "export-versions-and-checks"
    assert slug("What the model cannot translate, it copies") == "what-the-model-cannot-translate-it-copies"
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "b.md").write_text("# B\n\n## Real heading\n\n## Real heading\n", encoding="utf-8")
    (repo / "README.md").write_text(
        "[up](" + OUTSIDE + ") [ok](docs/b.md#real-heading) [dup](docs/b.md#real-heading-1) "
        "[bad anchor](docs/b.md#missing) ![img](docs/none.png) [web](https://example.org/x)\n"
        "`[code](nowhere.md)` [self](#top) <a href=\"docs/gone.md\">x</a>\n"
        "```\n[fenced](nowhere.md)\n```\n# Top\n", encoding="utf-8")
    found = problems(repo / "README.md", root=repo)
    assert [line.split(": ", 1)[1] for line in found] == [
        OUTSIDE + ": leaves the repository",
        "docs/b.md#missing: no heading with the anchor #missing in docs/b.md",
        "docs/none.png: no such file",
        "docs/gone.md: no such file",
    ]
