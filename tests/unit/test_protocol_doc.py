"""docs/protocol.md and the code that cites it cannot drift apart.

Comments cite the protocol document with a section sign: a section number (one or more
dot-separated parts), optionally followed by numbered items ("#M", "#M-N", "#M-#N", several in a
row), a range of sections ("-" and a second section sign), or a section name ("conventions").
Every such citation must resolve to a heading or a numbered item of the document, and the field
numbers and enum values the document quotes must be the ones in proto/*.proto.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.descriptor import Descriptor, EnumDescriptor

from berth.proto import agent_pb2, common_pb2

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "protocol.md"
CITING_DIRS = ("src", "tests", "tools", "bench", "proto")
SKIPPED_DIRS = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}

SIGN = "\u00a7"
CITATION = re.compile(SIGN + r"(\d+(?:\.\d+)*)((?:\s*#\d+(?:-#?\d+)?)*)")
ITEM = re.compile(r"#(\d+)(?:-#?(\d+))?")
SECTION_RANGE = re.compile(SIGN + r"(\d+(?:\.\d+)*)-" + SIGN + r"(\d+(?:\.\d+)*)")
NAMED = re.compile(SIGN + r" ([A-Za-z]\w*)")

HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)\.? (.+)$")
NUMBERED_ITEM = re.compile(r"^(\d+)\. ")
FIELD_ROW = re.compile(r"^\| `(common\.)?(\w+)\.(\w+)` \| (\d+) \|")
ENUM_ROW = re.compile(r"^\| `(agent|common)\.(\w+)` \| (\d+ `\w+`.*) \|$")
ENUM_VALUE = re.compile(r"(\d+) `(\w+)`")


@dataclass(frozen=True)
class Citation:
    anchor: str  # "7", "6.3", "17 #11" or a section name
    where: str  # file:line


@dataclass(frozen=True)
class Anchors:
    sections: frozenset[str]
    items: frozenset[str]
    titles: tuple[str, ...]

    def resolves(self, anchor: str) -> bool:
        if anchor[0].isdigit():
            return anchor in self.sections or anchor in self.items
        return any(anchor.lower() in title.lower().split() for title in self.titles)


def _doc_lines() -> list[str]:
    return DOC.read_text(encoding="utf-8").splitlines()


def _anchors() -> Anchors:
    sections: set[str] = set()
    items: set[str] = set()
    titles: list[str] = []
    current = ""
    in_code = False
    for line in _doc_lines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        if heading := HEADING.match(line):
            current = heading.group(1)
            sections.add(current)
            titles.append(heading.group(2))
        elif (item := NUMBERED_ITEM.match(line)) and current:
            items.add(f"{current} #{item.group(1)}")
    return Anchors(frozenset(sections), frozenset(items), tuple(titles))


def _citing_files() -> Iterator[Path]:
    for top in CITING_DIRS:
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and not SKIPPED_DIRS.intersection(path.parts):
                yield path


def _section_range(first: str, last: str) -> list[str]:
    head_a, _, tail_a = first.rpartition(".")
    head_b, _, tail_b = last.rpartition(".")
    assert head_a == head_b and int(tail_a) <= int(tail_b), f"odd section range {first}-{last}"
    return [f"{head_a}.{n}" if head_a else str(n) for n in range(int(tail_a), int(tail_b) + 1)]


def _citations_in(text: str, where: str) -> Iterator[Citation]:
    for match in CITATION.finditer(text):
        section, tail = match.group(1), match.group(2)
        items = ITEM.findall(tail)
        if not items:
            yield Citation(section, where)
        for first, last in items:
            for n in range(int(first), int(last or first) + 1):
                yield Citation(f"{section} #{n}", where)
    for match in SECTION_RANGE.finditer(text):
        for section in _section_range(match.group(1), match.group(2)):
            yield Citation(section, where)
    for match in NAMED.finditer(text):
        yield Citation(match.group(1), where)


def _all_citations() -> list[Citation]:
    found: list[Citation] = []
    for path in _citing_files():
        if path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if SIGN not in text:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            where = f"{path.relative_to(ROOT)}:{number}"
            found.extend(_citations_in(line, where))
    return found


def test_every_citation_in_the_tree_resolves_to_the_protocol_doc() -> None:
    anchors = _anchors()
    citations = _all_citations()
    distinct = {c.anchor for c in citations}
    # a floor, so that a parser that finds nothing cannot pass
    assert len(distinct) >= 60, f"only {len(distinct)} distinct citations found"
    missing = sorted(f"{c.where}: {SIGN}{c.anchor}" for c in citations if not anchors.resolves(c.anchor))
    assert not missing, "citations with no section or item in docs/protocol.md:\n" + "\n".join(missing)


def test_the_citation_parser_reads_every_form_the_comments_use() -> None:
    def anchors(text: str) -> list[str]:
        return [c.anchor for c in _citations_in(text, "x")]

    s = SIGN
    assert anchors(f"({s}3.7/{s}4.4)") == ["3.7", "4.4"]
    assert anchors(f"{s}6.3 #6-7, {s}14") == ["6.3 #6", "6.3 #7", "14"]
    assert anchors(f"{s}17 #37-#39") == ["17 #37", "17 #38", "17 #39"]
    assert anchors(f"{s}17 #12 #15)") == ["17 #12", "17 #15"]
    assert anchors(f"commands ({s}9-{s}12)") == ["9", "12", "9", "10", "11", "12"]
    assert anchors(f"({s} conventions)") == ["conventions"]


def test_numbered_items_count_up_so_the_rendered_numbers_are_the_cited_ones() -> None:
    by_section: dict[str, list[int]] = {}
    for item in _anchors().items:
        section, _, number = item.partition(" #")
        by_section.setdefault(section, []).append(int(number))
    for section, numbers in by_section.items():
        numbers.sort()
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), section
    assert by_section["17"] == list(range(1, 55))


def _message(package: str | None, name: str) -> Descriptor:
    module = common_pb2 if package else agent_pb2
    descriptor: Descriptor = module.DESCRIPTOR.message_types_by_name[name]
    return descriptor


def test_field_numbers_quoted_in_the_doc_are_the_wire_numbers() -> None:
    rows = [m for line in _doc_lines() if (m := FIELD_ROW.match(line))]
    assert len(rows) > 50
    wrong = []
    for row in rows:
        package, message, field, number = row.group(1), row.group(2), row.group(3), int(row.group(4))
        descriptor = _message(package, message).fields_by_name.get(field)
        if descriptor is None or descriptor.number != number:
            wrong.append(row.group(0))
    assert not wrong, "\n".join(wrong)


def test_enum_values_quoted_in_the_doc_are_complete_and_exact() -> None:
    rows = [m for line in _doc_lines() if (m := ENUM_ROW.match(line))]
    modules = {"agent": agent_pb2, "common": common_pb2}
    quoted = set()
    for row in rows:
        enum: EnumDescriptor = modules[row.group(1)].DESCRIPTOR.enum_types_by_name[row.group(2)]
        values = {name: int(number) for number, name in ENUM_VALUE.findall(row.group(3))}
        assert values == {v.name: v.number for v in enum.values}, row.group(2)
        quoted.add(row.group(2))
    every_enum = set(agent_pb2.DESCRIPTOR.enum_types_by_name) | set(common_pb2.DESCRIPTOR.enum_types_by_name)
    assert quoted == every_enum


def test_nothing_in_the_repository_points_at_the_protocol_notes_outside_it() -> None:
    outside = ("shared" + "/protocol", "protocol" + "/README")
    files = [*_citing_files(), ROOT / "README.md", DOC]
    offenders = []
    for path in files:
        if path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [f"{path.relative_to(ROOT)}: {needle}" for needle in outside if needle in text]
    assert not offenders, "\n".join(offenders)
