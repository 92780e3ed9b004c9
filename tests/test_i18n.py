"""Every lab's handout exists in English (handout.md) and Korean (handout.ko.md),
and the two cannot drift apart.

A Korean-reading student must be able to do every lab from handout.ko.md alone,
so the Korean handout is checked against the English one for structure, not
wording: the same headings (number, level and order), byte-identical code
blocks in the same order, every number of the English prose (a Korean sentence
may only add numbers its code blocks show), every inline code span, tables of
the same shape, and no passage left in English. The notes' Korean terms must be used, each with its
English term in parentheses where it first appears, e.g. "파이프(pipe)".
"""

import re
from collections import Counter

import pytest

from grader import labs

ALL_LABS = labs.all_labs()

# The course notes' terms, per lab: (Korean term, English word its parenthesis must contain).
TERMS = {
    "lab1": [("익명 파이프", "anonymous pipe"), ("이름있는 파이프", "named pipe"), ("파이프", "pipe")],
    "lab2": [("메시지 큐", "message queue")],
    "lab3": [("공유 메모리", "shared memory"), ("세마포어", "semaphore"), ("뮤텍스", "mutex")],
    "lab4": [("소켓", "socket")],
    "lab5": [("시그널", "signal")],
    "lab6": [("멀티스레딩", "multithreading"), ("멀티프로세싱", "multiprocessing")],
}

FENCE = re.compile(r"^\s*(```|~~~)")  # fences may be indented inside a list item
HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
INLINE_CODE = re.compile(r"`[^`]+`")  # a code span may wrap onto the next line
LINK_TARGET = re.compile(r"\]\([^)\s]*\)")
HANGUL = re.compile(r"[\uac00-\ud7a3]")
LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


class Handout:
    """A Markdown handout split into what the checks compare."""

    def __init__(self, path):
        self.path = path
        self.text = path.read_text(encoding="utf-8")
        self.code_blocks = []  # each fenced block, fences included, byte for byte
        self.prose = []        # every line outside code blocks
        block = None
        for line in self.text.splitlines(keepends=True):
            if block is None and FENCE.match(line):
                block = [line]
            elif block is not None:
                block.append(line)
                if FENCE.match(line) and line.strip() == line.strip()[0] * len(line.strip()):
                    self.code_blocks.append("".join(block))
                    block = None
            else:
                self.prose.append(line.rstrip("\n"))
        assert block is None, f"{path.name}: a code block is never closed"
        self.headings = [(len(m[1]), m[2]) for m in map(HEADING.match, self.prose) if m]
        self.table_rows = [line for line in self.prose if line.lstrip().startswith("|")]

    def prose_text(self):
        return "\n".join(self.prose)

    def numbers(self):
        """Every number in the prose (inline code included, code blocks not)."""
        return Counter(NUMBER.findall(self.prose_text()))

    def inline_code(self):
        return {" ".join(span.split()) for span in INLINE_CODE.findall(self.prose_text())}

    def passages(self):
        """Paragraphs, list items, headings and table rows of the prose."""
        current = []
        for line in self.prose + [""]:
            starts_item = re.match(r"^\s*(?:[*+-]|\d+\.)\s|^\s*#|^\s*\|", line)
            if not line.strip() or starts_item:
                if current:
                    yield " ".join(current)
                current = [line.strip()] if line.strip() else []
                if starts_item and (line.lstrip().startswith(("#", "|"))):
                    yield current.pop()
            else:
                current.append(line.strip())


def compare_headings(en, ko):
    if [level for level, _ in ko.headings] != [level for level, _ in en.headings]:
        return ["heading levels differ:\n  EN " + repr(en.headings) + "\n  KO " + repr(ko.headings)]
    return []


def compare_code_blocks(en, ko):
    if len(ko.code_blocks) != len(en.code_blocks):
        return [f"{len(en.code_blocks)} code blocks in English, {len(ko.code_blocks)} in Korean"]
    return [f"code block {i} differs:\nEN:\n{e}\nKO:\n{k}"
            for i, (e, k) in enumerate(zip(en.code_blocks, ko.code_blocks), 1) if e != k]


def compare_numbers(en, ko):
    """Every number of the English prose appears as often in the Korean prose.

    The Korean prose may repeat a number of a code block (when it explains a
    comment of that block), but no other number: a mistyped one shows up both
    as missing and as extra.
    """
    missing = en.numbers() - ko.numbers()
    in_code = set(NUMBER.findall("".join(ko.code_blocks)))
    extra = {n: c for n, c in (ko.numbers() - en.numbers()).items() if n not in in_code}
    return [f"numbers missing in Korean: {dict(missing)}"] * bool(missing) + [
        f"numbers only in Korean: {extra}"] * bool(extra)


def compare_inline_code(en, ko):
    missing = en.inline_code() - ko.inline_code()
    return [f"inline code missing in Korean: {sorted(missing)}"] if missing else []


def compare_tables(en, ko):
    def shape(rows):
        return [row.strip().strip("|").count("|") for row in rows]
    if shape(ko.table_rows) != shape(en.table_rows):
        return [f"tables differ: {len(en.table_rows)} rows in English, {len(ko.table_rows)} in Korean, "
                f"columns per row {shape(en.table_rows)} vs {shape(ko.table_rows)}"]
    return []


def untranslated(ko):
    if len(HANGUL.findall(ko.text)) < 500:
        return ["hardly any Korean"]
    problems = []
    for passage in ko.passages():
        words = LATIN_WORD.findall(LINK_TARGET.sub("", INLINE_CODE.sub("", passage)))
        if len(words) >= 3 and not HANGUL.search(passage):
            problems.append(f"passage not translated: {passage[:200]!r}")
    return problems


def missing_terms(ko, terms):
    """The notes' Korean terms, each glossed in English where it first appears."""
    prose, problems = ko.prose_text(), []
    for term, english in terms:
        first = prose.find(term)
        if first < 0:
            problems.append(f"the notes' term {term} ({english}) is not used")
            continue
        after = prose[first + len(term):first + len(term) + 80]
        gloss = re.match(r"[*_]*\s?\(([^)]*)\)", after)  # emphasis may close before the parenthesis
        if not (gloss and english in gloss[1].lower()):
            problems.append(f"first use of {term} must be followed by its English term in parentheses, "
                            f"e.g. {term}({english}); found {term}{after[:30]!r}")
    return problems


COMPARISONS = [compare_headings, compare_code_blocks, compare_numbers, compare_inline_code, compare_tables]


def handouts(lab):
    english = lab.folder / "handout.md"
    korean = lab.folder / "handout.ko.md"
    assert english.is_file(), f"{lab.name}/handout.md is missing"
    assert korean.is_file(), f"{lab.name}/handout.ko.md is missing"
    return Handout(english), Handout(korean)


@pytest.fixture(params=[pytest.param(lab, id=lab.id) for lab in ALL_LABS])
def lab(request):
    return request.param


def test_every_lab_has_terms_to_check():
    assert {lab.id for lab in ALL_LABS} <= set(TERMS), "add the new lab's Korean terms to TERMS"


def test_both_handouts_exist(lab):
    handouts(lab)


def test_readme_links_both_handouts(lab):
    readme = (lab.folder / "README.md").read_text(encoding="utf-8")
    for name in ("handout.md", "handout.ko.md"):
        assert f"]({name})" in readme, f"{lab.name}/README.md does not link {name}"


@pytest.mark.parametrize("compare", COMPARISONS, ids=lambda f: f.__name__)
def test_korean_handout_has_the_english_structure(lab, compare):
    """Same headings, code blocks, numbers, inline code and table shape."""
    problems = compare(*handouts(lab))
    assert not problems, "\n".join(problems)


def test_korean_handout_is_translated_throughout(lab):
    _, ko = handouts(lab)
    problems = untranslated(ko)
    assert not problems, "\n".join(problems)


def test_notes_terms_with_the_english_term_at_first_use(lab):
    _, ko = handouts(lab)
    problems = missing_terms(ko, TERMS[lab.id])
    assert not problems, "\n".join(problems)


# The checks themselves must be able to fail: each one against a pair that drifted.

EN_SAMPLE = """\
# Lab 9: Pipes

A pipe holds 64 KiB. Call `os.pipe()` and read until the end of the file.

```python
r, w = os.pipe()   # two ends
```

| what | size |
|---|---|
| buffer | 64 KiB |
"""

KO_SAMPLE = """\
# 실습 9: 파이프(pipe)

파이프는 64 KiB를 담습니다. `os.pipe()`를 호출하고 파일 끝까지 읽으세요.

```python
r, w = os.pipe()   # two ends
```

| 무엇 | 크기 |
|---|---|
| 버퍼 | 64 KiB |
""" + "가" * 500

DRIFTS = {
    compare_headings: ("# 실습 9:", "## 실습 9:"),
    compare_code_blocks: ("# two ends", "# 두 끝"),
    compare_numbers: ("파이프는 64 KiB", "파이프는 46 KiB"),
    compare_inline_code: ("`os.pipe()`를", "os.pipe()를"),
    compare_tables: ("| 버퍼 | 64 KiB |\n", ""),
}


def _pair(tmp_path, ko_text):
    (tmp_path / "en.md").write_text(EN_SAMPLE, encoding="utf-8")
    (tmp_path / "ko.md").write_text(ko_text, encoding="utf-8")
    return Handout(tmp_path / "en.md"), Handout(tmp_path / "ko.md")


def test_the_checks_pass_a_faithful_pair(tmp_path):
    en, ko = _pair(tmp_path, KO_SAMPLE)
    assert [p for compare in COMPARISONS for p in compare(en, ko)] == []
    assert untranslated(ko) == [] and missing_terms(ko, [("파이프", "pipe")]) == []


@pytest.mark.parametrize("compare", COMPARISONS, ids=lambda f: f.__name__)
def test_each_check_catches_a_drift(tmp_path, compare):
    old, new = DRIFTS[compare]
    assert old in KO_SAMPLE
    en, ko = _pair(tmp_path, KO_SAMPLE.replace(old, new, 1))
    assert compare(en, ko), f"{compare.__name__} missed a drift"


def test_untranslated_and_unglossed_text_is_caught(tmp_path):
    _, ko = _pair(tmp_path, KO_SAMPLE.replace(
        "파이프는 64 KiB를 담습니다. `os.pipe()`를 호출하고 파일 끝까지 읽으세요.",
        "A pipe holds 64 KiB. Call `os.pipe()` and read until the end of the file."))
    assert untranslated(ko)
    _, ko = _pair(tmp_path, KO_SAMPLE.replace("파이프(pipe)", "파이프"))
    assert missing_terms(ko, [("파이프", "pipe")])
