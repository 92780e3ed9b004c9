"""Korean as well as English, from one source of truth: the message catalog and the labs' hints.

Every text a student reads is written once, in English, and marked for the
catalog (``_("...")`` in grader/*.py, ``{{ _("...") }}`` in templates/*.j2);
its Korean lives in grader/locale/ko/LC_MESSAGES/ipclab.po. Hints live in
lab.yaml / hidden.yaml as ``{en: ..., ko: ...}``. These tests find every
message the code and templates use and fail, naming them, when one has no
Korean; and they check the student's path end to end in Korean: the score
table of ``make test-lab1``, report.html in headless Chromium, summary.html
and its charts.
"""

from __future__ import annotations

import html.parser
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from babel.messages import pofile
from babel.messages.extract import extract_from_file

from grader import gradebook, i18n, labs, reports, sandbox

ROOT = Path(__file__).resolve().parents[1]
PO_FILE = ROOT / "grader" / "locale" / "ko" / "LC_MESSAGES" / "ipclab.po"
PY_KEYWORDS = {"_": None, "N_": None, "gettext": (1,), "say": (1,)}
HANGUL = re.compile(r"[\uac00-\ud7a3]")
# str.format fields in Python ({name}), Jinja2 newstyle fields in templates (%(name)s)
# ({name!r} and {value:.1f} name a field too)
PLACEHOLDER = re.compile(r"\{(\w*)(?:![rsa])?(?::[^{}]*)?\}|%\((\w+)\)[sdfr]")
CHROMIUM = "/usr/bin/chromium"


def catalog():
    with PO_FILE.open("rb") as source:
        return pofile.read_po(source, locale="ko", domain=i18n.DOMAIN)


def _where(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def message_ids(py_files, templates) -> dict[str, str]:
    """Every message id the code and templates use -> where it is first used."""
    found = {}
    for path in py_files:
        for lineno, message, _comments, _context in extract_from_file("python", str(path), keywords=PY_KEYWORDS):
            message = message[0] if isinstance(message, tuple) else message
            found.setdefault(message, f"{_where(path)}:{lineno}")
    for path in templates:
        for lineno, message, _comments, _context in extract_from_file(
                "jinja2.ext:babel_extract", str(path), options={"extensions": "jinja2.ext.i18n"}):
            message = message[0] if isinstance(message, tuple) else message
            found.setdefault(message, f"{_where(path)}:{lineno}")
    return {m: where for m, where in found.items() if m}


def untranslated(ids: dict[str, str], cat) -> list[str]:
    missing = []
    for message, where in sorted(ids.items(), key=lambda item: item[1]):
        entry = cat.get(message)
        if entry is None or not entry.string:
            missing.append(f"{where}: {message!r}")
    return missing


def lab_test_files() -> list[Path]:
    """The labs' public and hidden tests and their helpers: they word failures with say()."""
    return sorted([*ROOT.glob("labs/*/tests/*.py"), *ROOT.glob("reference/*/tests/*.py")])


def used_message_ids() -> dict[str, str]:
    ids = message_ids(sorted((ROOT / "grader").glob("*.py")) + lab_test_files(),
                      sorted((ROOT / "templates").glob("*.j2")))
    # Lab titles are translated where they are shown (_(lab.title)): they are messages too.
    ids.update({lab.title: f"{lab.folder.relative_to(ROOT)}/lab.yaml: title" for lab in labs.all_labs(ROOT)})
    return ids


# -- (a) the catalog has every message in Korean --------------------------------------------------------


def test_every_message_used_has_a_korean_translation():
    ids = used_message_ids()
    assert len(ids) > 50, f"the extraction found only {len(ids)} messages: is it broken?"
    missing = untranslated(ids, catalog())
    assert not missing, "messages with no Korean in ipclab.po:\n" + "\n".join(missing)


def test_every_catalog_entry_is_translated():
    empty = [m.id for m in catalog() if m.id and not m.string]
    assert not empty, f"entries of ipclab.po with an empty msgstr: {empty}"


def test_the_check_finds_a_message_missing_from_the_catalog(tmp_path):
    template = tmp_path / "new.html.j2"
    template.write_text('<p>{{ _("Submission %(student)s", student=s) }} {{ _("A sentence nobody translated") }}</p>')
    code = tmp_path / "new.py"
    code.write_text('print(_("Another sentence nobody translated"), N_("Hint: {hint}"))\n')
    ids = {m: w for m, w in message_ids([code], [template]).items()}
    assert set(ids) == {"Submission %(student)s", "A sentence nobody translated",
                        "Another sentence nobody translated", "Hint: {hint}"}
    missing = untranslated({m: m for m in ids}, catalog())
    assert sorted(missing) == sorted(f"{m}: {m!r}" for m in ("A sentence nobody translated",
                                                          "Another sentence nobody translated"))


# -- (b) every hint in both languages -------------------------------------------------------------------


def hint_problems(where: str, hint) -> list[str]:
    if not isinstance(hint, dict):
        return [f"{where}: the hint is not {{en: ..., ko: ...}}: {hint!r}"]
    problems = [f"{where}: no {lang} hint" for lang in ("en", "ko") if not str(hint.get(lang) or "").strip()]
    if not problems and not HANGUL.search(hint["ko"]):
        problems.append(f"{where}: the ko hint has no Korean: {hint['ko']!r}")
    return problems


def test_every_hint_has_english_and_korean():
    problems, count = [], 0
    for lab in labs.all_labs(ROOT):
        for key, spec in lab.tests.items():
            count += 1
            problems += hint_problems(f"{lab.id} {key}", spec.hint)
        for number, rule in enumerate(lab.symptoms):
            count += 1
            problems += hint_problems(f"{lab.id} symptoms[{number}]", rule.get("hint"))
    assert count > 100, f"only {count} hints found"
    assert not problems, "\n".join(problems)


def test_the_hint_check_catches_a_missing_or_english_korean_hint():
    assert hint_problems("x", "English only")
    assert hint_problems("x", {"en": "Close the pipe.", "ko": ""})
    assert hint_problems("x", {"en": "Close the pipe.", "ko": "Close the pipe."})
    assert not hint_problems("x", {"en": "Close the pipe.", "ko": "파이프를 닫으세요."})


def test_a_hint_is_chosen_by_language():
    lab = labs.find_lab("lab1", ROOT)
    key = "test_pipeline.py::test_no_zombies"
    assert "os.waitpid" in lab.hint_for(key, "en") and not HANGUL.search(lab.hint_for(key, "en"))
    assert "os.waitpid" in lab.hint_for(key, "ko") and HANGUL.search(lab.hint_for(key, "ko"))


# -- (c) placeholders survive translation --------------------------------------------------------------


def placeholders(text: str) -> list[str]:
    return sorted(a or b for a, b in PLACEHOLDER.findall(text))


def test_placeholders_of_each_translation_match_its_message():
    wrong = [f"{m.id!r}: {placeholders(m.id)} -> {m.string!r}: {placeholders(m.string)}"
             for m in catalog() if m.id and placeholders(m.id) != placeholders(m.string)]
    assert not wrong, "\n".join(wrong)


def say_calls_without_their_fields(path: Path) -> list[str]:
    """say("...", **fields) calls whose fields do not match the message's placeholders."""
    import ast

    wrong = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "say"):
            continue
        if not node.args or not isinstance(node.args[0], ast.Constant) or not isinstance(node.args[0].value, str):
            wrong.append(f"{_where(path)}:{node.lineno}: say() needs a plain string literal (not an f-string)")
            continue
        if any(keyword.arg is None for keyword in node.keywords):
            continue   # say(message, **fields): cannot be checked statically
        wanted = set(placeholders(node.args[0].value))
        given = {keyword.arg for keyword in node.keywords}
        if wanted != given or "" in wanted:
            wrong.append(f"{_where(path)}:{node.lineno}: {node.args[0].value!r} needs {sorted(wanted)}, "
                         f"given {sorted(given)}")
    return wrong


def test_every_say_call_fills_exactly_its_placeholders():
    wrong = [problem for path in lab_test_files() + sorted((ROOT / "grader").glob("*.py"))
             for problem in say_calls_without_their_fields(path)]
    assert not wrong, "\n".join(wrong)


def test_the_say_check_sees_a_missing_and_an_extra_field(tmp_path):
    code = tmp_path / "t.py"
    code.write_text('say("got {got!r}, want {want}", got=1)\nsay("plain", x=2)\nsay(f"{x}")\nsay("ok {n:.1f}", n=1)\n')
    problems = say_calls_without_their_fields(code)
    assert len(problems) == 3 and ":1:" in problems[0] and ":2:" in problems[1] and ":3:" in problems[2], problems


def test_the_placeholder_check_sees_a_dropped_field():
    assert placeholders("Hint: {hint}") != placeholders("힌트:")
    assert placeholders("{got!r} and {x:.1f}") == ["got", "x"]
    assert placeholders("%(passed)s of %(cases)s") == placeholders("%(cases)s개 중 %(passed)s개")


# -- (d) make test-lab1 in a Korean locale ---------------------------------------------------------------


def korean_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("IPCLAB_LANG", "LC_ALL", "LC_MESSAGES", "LANGUAGE")}
    env["LANG"] = "ko_KR.UTF-8"
    return env


def test_make_test_lab1_in_a_korean_locale_shows_korean_hints():
    lab = labs.find_lab("lab1", ROOT)
    proc = subprocess.run(["make", "--no-print-directory", "test-lab1"], cwd=ROOT, env=korean_environment(),
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert "lab1: 0/100" in out, out[-3000:] + proc.stderr[-2000:]
    assert "힌트:" in out and "점수" in out, out[-3000:]
    korean_hints = [labs.localised(spec.hint, "ko") for spec in lab.tests.values() if not spec.hidden]
    shown = [hint for hint in korean_hints if hint in out]
    assert shown, "no Korean hint of lab1 in the score table:\n" + out[-3000:]
    english_hints = [labs.localised(spec.hint, "en") for spec in lab.tests.values() if not spec.hidden]
    assert not [hint for hint in english_hints if hint in out], "English hints in a Korean score table"
    # Why each test failed is said in Korean too (the program's own output may follow in English).
    reasons = [line for line in out.splitlines() if line.strip().startswith("원인:")]
    assert reasons, "no reason lines (원인:) in the score table:\n" + out[-3000:]
    english = [line for line in reasons if not HANGUL.search(line.split("원인:", 1)[1])]
    assert not english, "reasons not in Korean:\n" + "\n".join(english)


# -- (e) report.html in Korean, in headless Chromium -----------------------------------------------------


def korean_report() -> dict:
    """The report of lab 1's stub (everything failed), built by reports.py in Korean."""
    lab = labs.find_lab("lab1", ROOT)
    expected = list(lab.tests)
    ctx = reports.Context(lab=lab, submission=Path("/subs/minji.zip"), student_id="minji", kit_version="0.1.0",
                          image_tag="ipclab-runner:0.1.0", started_at=0.0, expected=expected,
                          limits={"wall_clock": 60, "memory": "512m", "output": "1m"})
    lines = [{"t": "start"}, {"t": "collected", "count": len(expected)}]
    lines += [{"t": "result", "nodeid": f"labs/lab1_pipes/tests/{key}", "outcome": "failed", "duration": 0.01,
               "message": "NotImplementedError: pipeline", "output": ""} for key in expected]
    lines += [{"t": "done"}, {"t": "end", "exit": 1, "dropped_output": 0, "leftovers": [], "stats": {}}]
    ctx.run = sandbox.RunResult(lines=lines, exit_code=1, wall_clock_killed=False, oom_killed=False, seconds=1.0,
                                host_stats={"peak_processes": 2}, stderr_tail="", unparsed_lines=0)
    return reports.build(ctx, finished_at=2.0, lang="ko")


class _Text(html.parser.HTMLParser):
    """The text a reader sees: not the style sheet, but image descriptions (alt) too."""

    def __init__(self):
        super().__init__()
        self.parts, self.hidden = [], 0

    def handle_starttag(self, tag, attrs):
        self.hidden += tag in ("style", "script", "title")
        self.parts += [value for name, value in attrs if name == "alt" and value]

    def handle_endtag(self, tag):
        self.hidden -= tag in ("style", "script", "title")

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def visible_text(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return " ".join(" ".join(parser.parts).split())


def test_reports_of_a_korean_grade(tmp_path):
    report = korean_report()
    assert report["lang"] == "ko" and report["score"] == 0
    hint = labs.find_lab("lab1", ROOT).hint_for("test_pipeline.py::test_no_zombies", "ko")
    row = next(r for r in report["tests"] if r["name"] == "test_pipeline.py::test_no_zombies")
    assert row["hint"] == hint
    reports.write_all(report, tmp_path)
    import json

    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    output = next(t["output"] for t in results["tests"] if t["name"] == "test_pipeline.py::test_no_zombies")
    assert f"힌트: {hint}" in output and "Hint:" not in output
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert '<html lang="ko">' in page and "Noto Sans CJK KR" in page
    text = visible_text(page)
    for english in ("Submission", "Points", "Result", "Hint:", "hidden test", "failed", "graded"):
        assert english not in text, f"English {english!r} left in the Korean report"
    # The same report in English is still English: one template, two languages.
    english_text = visible_text(reports.render_html(report, lang="en"))
    assert "Points" in english_text and "힌트" not in english_text


def _chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: apt-get install chromium"
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--no-first-run", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)


def test_korean_report_html_renders_in_headless_chromium(tmp_path):
    report = korean_report()
    hint = labs.find_lab("lab1", ROOT).hint_for("test_pipeline.py::test_no_zombies", "ko")
    page = tmp_path / "report.html"
    page.write_text(reports.render_html(report, lang="ko"), encoding="utf-8")

    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = visible_text(dom.stdout)
    assert "0 / 100" in text, text[:2000]
    assert f"힌트: {hint}" in text, text[:2000]
    assert "제출물 minji" in text and "실패" in text

    shot = tmp_path / "report.png"
    proc = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,700", page.as_uri())
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    from PIL import Image

    # The page is white: dark pixels mean glyphs were drawn.
    image = Image.open(shot).convert("L")
    dark = sum(image.histogram()[:128])
    assert dark > 2000, f"only {dark} dark pixels: was any text drawn?"


# -- (f) summary.html and its charts in Korean -----------------------------------------------------------


def class_rows(lab: labs.Lab) -> list[dict]:
    keys = list(lab.tests)

    def row(student, score, status="graded", reason=""):
        tests = {k: {"points": 0.0, "max": lab.tests[k].points, "status": "failed"} for k in keys}
        return {"student_id": student, "entry": f"{student}.zip", "status": status, "reason": reason,
                "score": score if status == "graded" else None, "max": 100.0 if status == "graded" else None,
                "tests": tests if status == "graded" else {}, "duration": 3.0}

    rows = [row("minji", 80.0), row("jisoo", 40.0), row("hana", None, "error", "cannot unpack hana.zip")]
    gradebook.apply_late_policy(rows, None, None)
    return rows


def test_korean_summary_html_and_charts_without_missing_glyphs(tmp_path):
    lab = labs.find_lab("lab1", ROOT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font(s)" would fail here
        summary = gradebook.write_all(tmp_path, lab, class_rows(lab), lang="ko")
    page = (tmp_path / "summary.html").read_text(encoding="utf-8")
    assert '<html lang="ko">' in page and page.count('src="data:image/png;base64,') == 2
    text = visible_text(page)
    assert "학생 3 명" in text and "점수 분포" in text and "채점되지 않음" in text and "파이프" in text, text[:2000]
    for english in ("students", "Score distribution", "Not graded", "Slowest submissions", "Histogram"):
        assert english not in text, f"English {english!r} left in the Korean summary"
    assert summary["counts"]["students"] == 3


def test_the_glyph_check_would_catch_korean_labels_without_a_cjk_font(monkeypatch):
    lab = labs.find_lab("lab1", ROOT)
    summary = gradebook.summarize(lab, class_rows(lab))
    monkeypatch.setattr(gradebook, "CJK_FONTS", ())
    with pytest.warns(UserWarning, match="missing from font"):
        gradebook.charts(summary, "ko")


# -- the command lines take --lang -----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["grade", "batch"])
def test_command_lines_take_lang(command):
    proc = subprocess.run([sys.executable, "-m", "grader", command, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--lang" in proc.stdout
