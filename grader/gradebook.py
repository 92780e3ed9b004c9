"""A class's grades: the late policy, ``gradebook.csv``, ``summary.json`` and ``summary.html``.

Batch grading (``grader/batch.py``) hands this module one *row* per student,
a plain dict::

    {"student_id": "alice", "entry": "alice.zip", "status": "graded",
     "reason": "", "score": 85.0, "max": 100.0, "duration": 12.3,
     "tests": {"test_pipe.py::test_eof": {"points": 5.0, "max": 5.0, "status": "passed"}},
     "rerun_alone": ["test_pipe.py::test_big"]}

``status`` is ``graded`` (the score is the submission's), ``error`` (the
submission could not be graded: an archive that does not unpack, two entries
for one student...) or ``grader_error`` (the kit failed; the batch retries it on
the next run). Only graded rows carry a score; the others keep their columns
empty, so that an LMS import never mistakes a failure to grade for a zero.

The late policy is applied here, not when grading, so that changing a deadline
or granting an extension never needs a regrade.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime as dt
import io
import json
import math
import os
import re
import statistics
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from grader import i18n, labs

TEMPLATE = "summary.html.j2"
SLOWEST = 10
# Fonts with Hangul for the charts' labels (Debian: fonts-noto-cjk); the first one found is used.
CJK_FONTS = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
             "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
             "/usr/share/fonts/opentype/noto/NotoSansCJKkr-Regular.otf")

# -- the late policy ----------------------------------------------------------------------

_PERIODS = {"day": dt.timedelta(days=1), "hour": dt.timedelta(hours=1)}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(d|h|m|days?|hours?|minutes?)\s*")


class PolicyError(ValueError):
    """The late policy or the manifest cannot be used."""


@dataclasses.dataclass
class LatePolicy:
    """Points lost for lateness: ``percent`` of the score per started ``period``, up to ``cap`` percent.

    A policy file (YAML)::

        deadline: 2026-03-01T23:59:00+09:00   # ISO 8601; without an offset, `timezone` applies
        timezone: Asia/Seoul                  # optional, default UTC
        penalty: {percent: 10, per: day}      # per: day or hour; every started period counts
        cap: 50                               # never lose more than 50% of the score
        grace: 15m                            # optional: lateness forgiven (network, clocks)
        extensions:                           # per student: a new deadline, or extra time
          alice: 2026-03-03T23:59:00+09:00
          bob: 2d
        use_file_times: false                 # true: students missing from the manifest are
                                              # timed by their entry's modification time

    Submission times come from the manifest (``--manifest``); file times are
    used only when the policy says so, because copying or unzipping an export
    changes them.
    """

    deadline: dt.datetime
    percent: float
    period: dt.timedelta
    cap: float = 100.0
    grace: dt.timedelta = dt.timedelta(0)
    extensions: dict[str, dt.datetime] = dataclasses.field(default_factory=dict)
    use_file_times: bool = False
    tz: dt.tzinfo = dt.timezone.utc

    @classmethod
    def load(cls, path: Path) -> "LatePolicy":
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise PolicyError(f"cannot read the late policy {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise PolicyError(f"{path}: a late policy is a mapping (deadline, penalty, ...)")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "policy") -> "LatePolicy":
        try:
            tz = ZoneInfo(data["timezone"]) if data.get("timezone") else dt.timezone.utc
        except Exception as exc:
            raise PolicyError(f"{source}: unknown timezone {data.get('timezone')!r}") from exc
        if "deadline" not in data:
            raise PolicyError(f"{source}: the policy needs a deadline")
        deadline = parse_time(data["deadline"], tz, what=f"{source}: deadline")
        penalty = data.get("penalty") or {}
        if not isinstance(penalty, dict) or "percent" not in penalty:
            raise PolicyError(f"{source}: penalty needs {{percent: N, per: day|hour}}")
        per = str(penalty.get("per", "day"))
        if per not in _PERIODS:
            raise PolicyError(f"{source}: penalty per {per!r}: use day or hour")
        extensions = {}
        for student, value in (data.get("extensions") or {}).items():
            if isinstance(value, str) and _DURATION.fullmatch(value):
                extensions[str(student)] = deadline + parse_duration(value)
            else:
                extensions[str(student)] = parse_time(value, tz, what=f"{source}: extension of {student}")
        return cls(deadline=deadline, percent=float(penalty["percent"]), period=_PERIODS[per],
                   cap=float(data.get("cap", 100)), grace=parse_duration(data.get("grace", "0m")),
                   extensions=extensions, use_file_times=bool(data.get("use_file_times", False)), tz=tz)

    def deadline_for(self, student_id: str) -> dt.datetime:
        return self.extensions.get(student_id, self.deadline)

    def penalty_percent(self, student_id: str, submitted_at: dt.datetime | None) -> float:
        """Percent of the score lost; 0 when on time or when the time is unknown."""
        if submitted_at is None:
            return 0.0
        late = submitted_at - self.deadline_for(student_id) - self.grace
        if late <= dt.timedelta(0):
            return 0.0
        periods = math.ceil(late / self.period)
        return min(self.cap, periods * self.percent)


def parse_duration(value) -> dt.timedelta:
    """``2d``, ``36h``, ``15m`` -> timedelta."""
    match = _DURATION.fullmatch(str(value))
    if not match:
        raise PolicyError(f"cannot read duration {value!r} (expected e.g. 2d, 36h, 15m)")
    amount, unit = float(match.group(1)), match.group(2)[0]
    return {"d": dt.timedelta(days=amount), "h": dt.timedelta(hours=amount), "m": dt.timedelta(minutes=amount)}[unit]


def parse_time(value, tz: dt.tzinfo, what: str = "time") -> dt.datetime:
    """An ISO 8601 time (YAML may already have parsed it); naive times are in ``tz``."""
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, dt.date):
        when = dt.datetime.combine(value, dt.time(23, 59, 59))
    else:
        try:
            when = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise PolicyError(f"{what}: cannot read {value!r} as a time (use ISO 8601, e.g. 2026-03-01T23:59:00+09:00)") from exc
    return when if when.tzinfo else when.replace(tzinfo=tz)


_ID_COLUMNS = ("student_id", "student", "id", "login", "username")
_TIME_COLUMNS = ("submitted_at", "submitted", "submission_time", "timestamp", "time")


def load_manifest(path: Path, tz: dt.tzinfo = dt.timezone.utc) -> dict[str, dt.datetime]:
    """Read a manifest CSV (a student id column and a submitted_at column) -> {student: time}."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise PolicyError(f"cannot read the manifest {path}: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    fields = {name.strip().lower(): name for name in reader.fieldnames or []}
    id_col = next((fields[c] for c in _ID_COLUMNS if c in fields), None)
    time_col = next((fields[c] for c in _TIME_COLUMNS if c in fields), None)
    if id_col is None or time_col is None:
        raise PolicyError(f"{path}: the manifest needs a student_id and a submitted_at column; it has {reader.fieldnames}")
    times = {}
    for line, row in enumerate(reader, start=2):
        student = (row.get(id_col) or "").strip()
        stamp = (row.get(time_col) or "").strip()
        if not student:
            continue
        if student in times:
            raise PolicyError(f"{path}:{line}: student {student!r} appears twice")
        times[student] = parse_time(stamp, tz, what=f"{path}:{line}") if stamp else None
    return times


def apply_late_policy(rows: list[dict], policy: LatePolicy | None, manifest: dict[str, dt.datetime] | None,
                      file_times: dict[str, dt.datetime] | None = None) -> None:
    """Fill ``submitted_at``, ``late_percent``, ``late_penalty`` and ``final_score`` in each row."""
    manifest = manifest or {}
    for row in rows:
        student = row["student_id"]
        when = manifest.get(student)
        if when is None and policy is not None and policy.use_file_times and file_times:
            when = file_times.get(student)
        row["submitted_at"] = when.isoformat() if when else None
        percent = policy.penalty_percent(student, when) if policy else 0.0
        if policy is not None and when is None and student not in manifest:
            row.setdefault("notes", []).append("no submission time: no late penalty applied")
        if row.get("score") is None:
            row.update(late_percent=percent, late_penalty=None, final_score=None)
            continue
        penalty = round(row["score"] * percent / 100, 2)
        row.update(late_percent=percent, late_penalty=penalty, final_score=round(row["score"] - penalty, 2))


# -- gradebook.csv -----------------------------------------------------------------------------


def test_keys(lab: labs.Lab, rows: list[dict]) -> list[str]:
    """Every test column, in lab.yaml order, then any others a report named."""
    keys = list(lab.tests)
    for row in rows:
        keys += [k for k in row.get("tests", {}) if k not in keys]
    return keys


def _cell(value) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def gradebook_csv(lab: labs.Lab, rows: list[dict]) -> str:
    """One row per student; one column per test (the points earned)."""
    keys = test_keys(lab, rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["student_id", "score", "max", "late_penalty", "final_score", "status", "reason", *keys])
    for row in rows:
        tests = row.get("tests", {})
        writer.writerow([_cell(v) for v in (
            row["student_id"], row.get("score"), row.get("max"), row.get("late_penalty"),
            row.get("final_score"), row["status"], row.get("reason", ""),
            *((tests[k]["points"] if k in tests else None) for k in keys))])
    return out.getvalue()


# -- summary.json --------------------------------------------------------------------------------


def summarize(lab: labs.Lab, rows: list[dict], *, meta: dict | None = None) -> dict:
    """Class statistics, per-test pass rates, the slowest and the failed submissions."""
    graded = [r for r in rows if r["status"] == "graded"]
    finals = [r["final_score"] if r.get("final_score") is not None else r["score"] for r in graded]
    per_test = []
    for key in test_keys(lab, rows):
        outcomes = [r["tests"][key] for r in graded if key in r.get("tests", {})]
        passed = sum(1 for t in outcomes if t["points"] >= t["max"])
        per_test.append({"test": key, "ran": len(outcomes), "passed": passed,
                         "pass_rate": round(passed / len(outcomes), 4) if outcomes else None,
                         "timeouts": sum(1 for t in outcomes if t.get("status") == "timeout")})
    full = sum(1 for r in graded if r["score"] >= r["max"])
    return {
        "lab": lab.id,
        "title": lab.title,
        **(meta or {}),
        "counts": {"students": len(rows), "graded": len(graded), "full": full,
                   "partial": len(graded) - full, "errors": len(rows) - len(graded),
                   "late": sum(1 for r in graded if r.get("late_percent"))},
        "scores": _stats(finals),
        "tests": per_test,
        "slowest": [{"student_id": r["student_id"], "duration": r.get("duration")}
                    for r in sorted(graded, key=lambda r: -(r.get("duration") or 0))[:SLOWEST]],
        "errors": [{"student_id": r["student_id"], "entry": r.get("entry"), "status": r["status"],
                    "reason": r.get("reason", "")} for r in rows if r["status"] != "graded"],
        # Graded, but the grader had something to say: crashed, hung, did not unpack...
        "problems": [{"student_id": r["student_id"], "score": r["score"], "reason": r["reason"]}
                     for r in graded if r.get("reason")],
        "reruns": [{"student_id": r["student_id"], "tests": r["rerun_alone"]} for r in rows if r.get("rerun_alone")],
        "students": rows,
    }


def _stats(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "median": None, "min": None, "max": None, "stdev": None}
    return {"mean": round(statistics.fmean(values), 2), "median": round(statistics.median(values), 2),
            "min": min(values), "max": max(values),
            "stdev": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0}


# -- summary.html ----------------------------------------------------------------------------------


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _cjk_font():
    """FontProperties of a font with Hangul, or None (the labels then need no more than DejaVu Sans)."""
    from matplotlib import font_manager

    for path in CJK_FONTS:
        if Path(path).is_file():
            return font_manager.FontProperties(fname=path)
    return None


def charts(summary: dict, lang: str | None = None) -> dict[str, str]:
    """The score histogram and the per-test pass-rate chart, as embeddable PNG data URLs.

    The axis labels come from the message catalog in ``lang``; Korean labels
    are drawn with a CJK font (fonts-noto-cjk), so no glyph is missing.
    """
    import matplotlib
    matplotlib.use("Agg")  # no display: render to memory
    from matplotlib.figure import Figure  # a Figure not tied to pyplot's global state: thread-safe

    _ = i18n.translator(i18n.language(lang))
    font = _cjk_font() if i18n.language(lang) != "en" else None
    label = {"fontproperties": font} if font is not None else {}

    scores = [r["final_score"] if r.get("final_score") is not None else r["score"]
              for r in summary["students"] if r["status"] == "graded"]
    hist = Figure(figsize=(7, 3))
    ax = hist.subplots()
    ax.hist(scores, bins=range(0, 105, 5), color="#4c72b0", edgecolor="white")
    ax.set_xlabel(_("final score"), **label)
    ax.set_ylabel(_("students"), **label)
    ax.set_xlim(0, 100)

    tests = [t for t in summary["tests"] if t["pass_rate"] is not None]
    rates = Figure(figsize=(7, max(2.0, 0.3 * len(tests) + 0.8)))
    ax = rates.subplots()
    ax.barh([t["test"] for t in tests][::-1], [100 * t["pass_rate"] for t in tests][::-1], color="#55a868")
    ax.set_xlabel(_("percent of graded submissions passing"), **label)
    ax.set_xlim(0, 100)
    ax.tick_params(axis="y", labelsize=8)
    return {"histogram": _png(hist), "pass_rates": _png(rates)}


def summary_html(summary: dict, template_dir: Path | None = None, lang: str | None = None) -> str:
    """summary.html in ``lang`` (default: :func:`i18n.language`)."""
    import jinja2

    lang = i18n.language(lang)
    env = i18n.jinja_env(lang, loader=jinja2.FileSystemLoader(str(template_dir or labs.KIT_ROOT / "templates")),
                         autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template(TEMPLATE).render(summary=summary, charts=charts(summary, lang))


# -- writing -----------------------------------------------------------------------------------------


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, then rename it: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_all(out: Path, lab: labs.Lab, rows: list[dict], *, meta: dict | None = None,
              lang: str | None = None) -> dict:
    """Write gradebook.csv, summary.json and summary.html (in ``lang``) into ``out``; return the summary."""
    summary = summarize(lab, rows, meta=meta)
    write_atomically(out / "gradebook.csv", gradebook_csv(lab, rows))
    write_atomically(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    write_atomically(out / "summary.html", summary_html(summary, lang=lang))
    return summary
