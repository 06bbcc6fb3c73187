"""The README and docs/ stay navigable: every relative link and ``#anchor`` resolves, the README stays short.

A link is checked the way GitHub renders it: relative to the page that holds it, to a file or folder that
exists in the repository; an ``#anchor`` must be the slug GitHub gives one of the target page's headings
(github-slugger's rules: lower-case, punctuation and symbols dropped, each space a ``-``, repeats numbered
``-1``, ``-2``...). Links inside code (fenced blocks, inline code) are text, not links, and are skipped, as are
links to other sites. ``docs/README.md`` indexes the docs, so every page in ``docs/`` must appear in it.
"""

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.tools import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
INDEX = DOCS / "README.md"
README_MAX_LINES = 400
"""The README is a user guide; detail goes to docs/ (issue 13)."""
HEADLINED = ("performance.md", "reliability.md", "testing.md")
"""Pages whose bold opening line the README quotes; the quote must not drift from the page."""

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_HTML_ANCHOR = re.compile(r"""<a\s[^>]*\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_INLINE_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")
_LINE_ANCHOR = re.compile(r"^L\d+(?:-L\d+)?$")
_DROPPED = {"No", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "Sc", "Sk", "Sm", "So", "Cc", "Cf", "Co", "Cn", "Zl", "Zp", "Zs"}
"""github-slugger removes these Unicode categories, except letters, a plain space and a plain ``-``."""


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def slug(text: str) -> str:
    """GitHub's anchor for a heading's text, before repeats are numbered."""
    return "".join(
        "-" if ch == " " else ch
        for ch in text.lower()
        if ch in " -" or ch.isalpha() or unicodedata.category(ch) not in _DROPPED
    )


class Slugger:
    """Numbers repeated slugs the way github-slugger does: ``a``, ``a-1``, ``a-2``..."""

    def __init__(self) -> None:
        self.occurrences: dict[str, int] = {}

    def slug(self, text: str) -> str:
        result = original = slug(text)
        while result in self.occurrences:
            self.occurrences[original] += 1
            result = f"{original}-{self.occurrences[original]}"
        self.occurrences[result] = 0
        return result


def heading_text(markdown: str) -> str:
    """A heading's text as GitHub renders it: link targets, code ticks and emphasis marks gone."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", markdown)
    text = _CODE_SPAN.sub(lambda match: match.group(2).strip(), text)
    return re.sub(r"\*+|<[^>]+>", "", text)


def prose_lines(text: str) -> list[str]:
    """The page's lines with fenced code blocks blanked out, so line numbers still match the file."""
    lines, fence = [], ""
    for line in text.splitlines():
        opening = _FENCE.match(line)
        if fence:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = ""
            lines.append("")
        elif opening:
            fence = opening.group(1)
            lines.append("")
        else:
            lines.append(line)
    return lines


def anchors_of(page: Path) -> set[str]:
    slugger, found = Slugger(), set()
    for line in prose_lines(page.read_text(encoding="utf-8")):
        heading = _HEADING.match(line)
        if heading:
            found.add(slugger.slug(heading_text(heading.group(2))))
        found.update(_HTML_ANCHOR.findall(line))
    return found


@dataclass(frozen=True)
class Link:
    page: Path
    line: int
    target: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}: {self.target}"


def links_of(page: Path) -> list[Link]:
    """The page's relative links (inline, images and reference definitions), outside code."""
    prose = "\n".join(prose_lines(page.read_text(encoding="utf-8")))
    # Code spans become same-length filler, so that a link's offset still gives its line.
    prose = _CODE_SPAN.sub(lambda match: "x" * len(match.group(0)), prose)
    found = []
    for pattern in (_INLINE_LINK, _REFERENCE):
        for match in pattern.finditer(prose):
            target = match.group(1)
            if target and not _SCHEME.match(target):
                found.append(Link(page, prose.count("\n", 0, match.start(1)) + 1, target))
    return found


def resolve(link: Link) -> tuple[Path, str]:
    """The file or folder ``link`` points at, and its anchor (``""`` for none)."""
    path, _, anchor = link.target.partition("#")
    base = REPO if path.startswith("/") else link.page.parent
    resolved = (base / unquote(path).lstrip("/")).resolve() if path else link.page
    return resolved, unquote(anchor)


def problems(kind: str) -> list[str]:
    found = []
    for page in pages():
        for link in links_of(page):
            target, anchor = resolve(link)
            if not target.is_relative_to(REPO.resolve()):
                if kind == "file":
                    found.append(f"{link}: points outside the repository")
            elif not target.exists():
                if kind == "file":
                    found.append(f"{link}: no such file or folder")
            elif anchor and kind == "anchor":
                page_of_anchor = target / "README.md" if target.is_dir() else target
                if page_of_anchor.suffix == ".md" and page_of_anchor.exists():
                    known = anchors_of(page_of_anchor)
                    if anchor.lower() not in known:
                        found.append(f"{link}: no heading with that anchor; the page has {', '.join(sorted(known))}")
                elif not _LINE_ANCHOR.match(anchor):
                    found.append(f"{link}: an anchor into a file that is not Markdown must be a line (#L12)")
    return found


def normalized(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        # From github-slugger's own fixtures, and headings of this repository's pages.
        ("heading with a - dash", "heading-with-a---dash"),
        ("heading with an _ underscore", "heading-with-an-_-underscore"),
        ("exchange.bind_headers(exchange, routing [, cb])", "exchangebind_headersexchange-routing--cb"),
        ("apostrophe’s should be trimmed", "apostrophes-should-be-trimmed"),
        ("I ♥ unicode", "i--unicode"),
        ("Привет non-latin 你好", "привет-non-latin-你好"),
        ("Set-up: two commands", "set-up-two-commands"),
        ('Legacy-token scope "all"', "legacy-token-scope-all"),
        ("Certificate rotation, logs and shutdown", "certificate-rotation-logs-and-shutdown"),
    ],
)
def test_anchors_are_the_slugs_github_gives_headings(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def test_a_repeated_heading_gets_a_numbered_anchor_as_on_github() -> None:
    slugger = Slugger()
    seen = [slugger.slug(text) for text in ("echo", "echo", "echo 1", "echo-1", "echo")]
    assert seen == ["echo", "echo-1", "echo-1-1", "echo-1-2", "echo-2"]


def test_heading_text_is_read_as_rendered_without_code_ticks_links_or_emphasis() -> None:
    assert slug(heading_text("`token-projector register` and **[the API](x.md)**")) == (
        "token-projector-register-and-the-api"
    )


def test_every_relative_link_points_at_a_file_or_folder_in_the_repository() -> None:
    broken = problems("file")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_anchor_names_a_heading_of_the_page_it_points_at() -> None:
    broken = problems("anchor")
    assert not broken, "broken anchors:\n" + "\n".join(broken)


def test_links_in_code_are_not_taken_for_links(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```sh\n[x](missing.md)\n```\n`[y](missing.md)` and [z](here.md#top)\n", encoding="utf-8")
    assert [(link.line, link.target) for link in links_of(page)] == [(4, "here.md#top")]


def test_the_readme_stays_under_400_lines() -> None:
    count = len(README.read_text(encoding="utf-8").splitlines())
    assert count < README_MAX_LINES, (
        f"README.md has {count} lines; keep it under {README_MAX_LINES}: move detail into docs/ and link to it"
    )


def test_the_docs_index_links_every_page_in_docs() -> None:
    indexed = {resolve(link)[0] for link in links_of(INDEX)}
    missing = [page.name for page in sorted(DOCS.glob("*.md")) if page != INDEX and page.resolve() not in indexed]
    assert not missing, f"docs/README.md does not link {', '.join(missing)}: add a row for each to its table"


@pytest.mark.parametrize("name", HEADLINED)
def test_the_readme_quotes_the_headline_of_each_detail_page_as_it_is(name: str) -> None:
    opening = re.search(r"^\*\*(.+?)\*\*", (DOCS / name).read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    assert opening, f"docs/{name} must open with its headline in bold"
    assert normalized(opening.group(1)) in normalized(README.read_text(encoding="utf-8")), (
        f"README.md must quote docs/{name}'s headline word for word: {normalized(opening.group(1))}"
    )
