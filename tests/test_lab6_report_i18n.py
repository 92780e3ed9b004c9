"""Lab 6's report in the student's language.

With Korean selected, the reference's ``report.md`` uses the course notes' rows
(메모리 공간, 통신 방법, 동기화 필요성, 안정성, 생성/관리 비용, 사용 사례) with the
measured values, says what was measured about threads and compute-heavy work
on CPython with the GIL, and ``comparison.png`` draws Hangul with real glyphs
(matplotlib warns "Glyph ... missing" when it has no font for them).

The measurements are fixed here, so that these tests check the report's
language and nothing of the machine's timing.
"""

import importlib.util
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTES_ROWS = ("메모리 공간", "통신 방법", "동기화 필요성", "안정성", "생성/관리 비용", "사용 사례")

# As measured on CPython with the GIL: threads do not speed up CPU-bound work.
MEASURED = {
    "shares_memory": {"thread": True, "process": False},
    "crash_isolated": {"thread": False, "process": True},
    "creation_cost": {"thread": 84e-6, "process": 2.1e-3},
    "worker_memory": {"thread": 16 * 2**10, "process": int(1.4 * 2**20)},
    "cpu_bound_speedup": {"thread": 1.02, "process": 1.93},
    "io_bound_speedup": {"thread": 14.9, "process": 13.1},
}


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compare():
    return _load(REPO / "reference" / "lab6_compare" / "compare.py", "lab6_reference_compare")


@pytest.fixture(scope="module")
def public_tests():
    """The lab tests' report reader: its rules are what grade the report."""
    return _load(REPO / "labs" / "lab6_compare" / "tests" / "lab6_report.py", "lab6_report_rules")


def _glyph_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "Glyph" in str(w.message) and "missing" in str(w.message)]


def _write(compare, out: Path, lang: str):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = compare.write_report(MEASURED, out, lang)
    return report.read_text(encoding="utf-8"), _glyph_warnings(caught)


def _table(text: str) -> dict:
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return {row[0]: row[1:] for row in rows}


def test_korean_report_uses_the_notes_rows_with_measured_values(compare, public_tests, tmp_path):
    text, _ = _write(compare, tmp_path, "ko")
    table = _table(text)
    assert list(table)[2:] == list(NOTES_ROWS), f"rows: {list(table)}"
    assert "16 KiB" in table["메모리 공간"][0] and "1.4 MiB" in table["메모리 공간"][1]
    assert "84 µs" in table["생성/관리 비용"][0] and "2.1 ms" in table["생성/관리 비용"][1]
    # The lab's grader reads the Korean table back, numbers and all.
    numbers = public_tests.report_numbers(text)
    assert numbers["cpu_bound_speedup"] == {"thread": 1.02, "process": 1.93}
    assert numbers["io_bound_speedup"] == {"thread": 14.9, "process": 13.1}
    assert numbers["creation_cost"]["thread"] == pytest.approx(84e-6)


def test_korean_report_says_what_was_measured_about_threads_and_the_gil(compare, tmp_path):
    # The notes say threads suit compute-heavy work; on CPython with the GIL
    # they measured 1.02x, and the report must say so in both languages.
    korean = _table(_write(compare, tmp_path / "ko", "ko")[0])["사용 사례"][0]
    english = _table(_write(compare, tmp_path / "en", "en")[0])["Use cases"][0]
    if getattr(__import__("sys"), "_is_gil_enabled", lambda: True)():
        assert "1.02x" in korean and "순차 실행보다 빠르지 않음" in korean and "GIL" in korean, korean
        assert "1.02x" in english and "no faster than serial" in english and "GIL" in english, english


def test_english_report_keeps_english_rows(compare, public_tests, tmp_path):
    text, _ = _write(compare, tmp_path, "en")
    assert not any(row in text for row in NOTES_ROWS)
    assert public_tests.report_numbers(text)["worker_memory"]["thread"] == 16 * 2**10


def test_korean_chart_has_real_glyphs(compare, tmp_path):
    _, missing = _write(compare, tmp_path, "ko")
    assert not missing, ("comparison.png lacks Hangul glyphs (install a CJK font: "
                         f"apt-get install fonts-noto-cjk): {missing[:2]}")
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_glyph_check_catches_a_font_without_hangul(tmp_path):
    """The check above can fail: DejaVu Sans alone has no Hangul, and matplotlib warns."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings(record=True) as caught, matplotlib.rc_context({"font.family": ["DejaVu Sans"]}):
        warnings.simplefilter("always")
        fig, ax = plt.subplots()
        ax.set_title("스레드와 프로세스")
        fig.savefig(tmp_path / "tofu.png")
        plt.close(fig)
    assert _glyph_warnings(caught)


@pytest.mark.parametrize("env, expected", [
    ({"IPCLAB_LANG": "ko"}, "ko"),
    ({"LANG": "ko_KR.UTF-8"}, "ko"),
    ({"IPCLAB_LANG": "en", "LANG": "ko_KR.UTF-8"}, "en"),
    ({"LANG": "C.UTF-8"}, "en"),
])
def test_report_language_follows_the_kit(compare, monkeypatch, env, expected):
    for var in ("IPCLAB_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert compare.report_language() == expected
