"""Scoring a run and writing its four reports: report.json, results.json, junit.xml, report.html.

``report.json`` schema (``"schema": "ipclab-report"``, ``"schema_version": 1``)::

    status          "graded" | "grader_error"
    reason          one sentence: why the kit could not grade, or why the
                    submission could not (fully) run; "" when nothing to say
    lab             {id, name, title}
    submission      {id, path, sha256}
    kit_version, image {tag, id}, container_id, tests_hash
    only_tests      null, or the test keys this run was limited to
    score, max_score
    tests           one row per test of lab.yaml/hidden.yaml:
                    {name, points, max, status, hidden, duration, cases, passed,
                     feedback, hint, output}
                    status: passed | failed | error | timeout | skipped | no_result | not_run
    problems        sentences: what cost points before any test ran
    notes           sentences: harmless remarks (extra files, ...)
    limits          the limits applied (see grader/sandbox.py)
    events          {wall_clock_killed, oom_killed, output_truncated,
                     output_dropped_bytes, leftover_processes, result_channel,
                     test_process_exit, unknown_results}
    resources       {cpu_seconds, peak_memory_bytes, peak_processes} (container cgroup)
    timings         {started_at, finished_at, total_seconds, collect_seconds, container_seconds}
    output          pytest's output in the container, capped

Points are computed here, on the host, from the expected test cases
(collected without the submission) and the harness's verified results: a
test's points are shared evenly among its cases, and a case without a
trustworthy result earns nothing.

For a grader error only report.json and report.html are written, and stale
results.json/junit.xml are removed: Gradescope must show "autograder failed",
never a zero.

Language: hints, the grader's own sentences about a test, the feedback in
results.json and every word of report.html are in the student's language
(``lang``: ``en`` or ``ko``, default :func:`grader.i18n.language`), from the
message catalog of grader/i18n.py; report.json records it as ``lang``.
junit.xml is for CI and instructors, and stays in English.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import jinja2

from grader import i18n, labs

SCHEMA_VERSION = 1
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
FEEDBACK_CAP = 2000


@dataclasses.dataclass
class Context:
    """Everything known about one grading run, filled in as it goes."""

    lab: labs.Lab
    submission: Path
    student_id: str
    kit_version: str
    image_tag: str
    started_at: float
    only_tests: list[str] | None = None
    submission_sha256: str = ""
    image_id: str = ""
    expected: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    limits: dict = dataclasses.field(default_factory=dict)
    timings: dict = dataclasses.field(default_factory=dict)
    run: object = None                # sandbox.RunResult
    not_run_reason: str = ""          # no test could run: why
    error: str = ""                   # grader error: why
    lang: str = ""                    # the student's language; "" = i18n.language()

    def grader_error(self, why: str) -> None:
        """The kit, not the submission, failed; ``why`` is the kit's own (English) account."""
        _ = i18n.translator(_lang(self))
        self.error = _("the kit could not grade this submission, through no fault of its code "
                       "(tell your instructor): {error}").format(error=why)


# -- reading the harness's lines -----------------------------------------------------


def _read_run(ctx: Context) -> tuple[dict, dict, str]:
    """Verified results by normalized id, the events, and why results are missing."""
    from grader.grade import normalize

    run = ctx.run
    results: dict[str, dict] = {}
    seen_twice: set[str] = set()
    events = {"wall_clock_killed": run.wall_clock_killed, "oom_killed": run.oom_killed,
              "output_truncated": False, "output_dropped_bytes": 0, "leftover_processes": [],
              "result_channel": "intact", "test_process_exit": None, "unknown_results": []}
    output, kinds = [], set()
    end = {}
    last_test = None
    for line in run.lines:
        kind = line.get("t")
        kinds.add(kind)
        if kind == "result":
            norm = normalize(str(line.get("nodeid", "")))
            if norm not in ctx.expected:
                events["unknown_results"].append(norm[:200])
            elif norm in results:
                seen_twice.add(norm)
            else:
                results[norm] = line
            last_test = norm
        elif kind == "out":
            output.append(str(line.get("data", "")))
        elif kind == "broken":
            events["result_channel"] = f"broken {_after(last_test)}: {line.get('why')}"
        elif kind == "tamper":
            events["result_channel"] = (f"tampered with during {normalize(line.get('nodeid') or '') or 'the run'}: "
                                        f"changed {', '.join(line.get('what', [])[:5])}")
        elif kind == "note":
            ctx.notes.append(str(line.get("text")))
        elif kind == "end":
            end = line
        elif kind == "harness_error":
            ctx.grader_error(f"the in-container harness failed: {line.get('error')}")
    _ = i18n.translator(_lang(ctx))
    for norm in seen_twice:
        results[norm] = {"outcome": "no_result", "message": _("this test reported twice: neither result is trusted")}
    if events["result_channel"] != "intact":
        # A forger sends its lies before the kit notices: once the channel is
        # broken, no result of this run is trusted, not even the earlier ones.
        results = {}
    collected = [line for line in run.lines if line.get("t") == "collected"]
    if collected and collected[0].get("count") != len(ctx.expected):
        ctx.notes.append(f"the container collected {collected[0].get('count')} test cases, the host {len(ctx.expected)}")
    if "start" not in kinds and not ctx.error:
        ctx.grader_error("the container's harness never started (exit code "
                         f"{run.exit_code}): {run.stderr_tail.strip()[-500:] or 'no output'}")
    elif not collected and not (run.wall_clock_killed or run.oom_killed) and not ctx.error:
        # The submission is not imported before collection ends: this is the kit's failure.
        ctx.grader_error(f"pytest did not collect the lab's tests in the container (exit {end.get('exit')}): "
                         + "".join(output)[-800:])
    elif not end and not (run.wall_clock_killed or run.oom_killed) and not ctx.error:
        ctx.grader_error(f"the harness's results were lost (container exit code {run.exit_code}): "
                         f"{run.stderr_tail.strip()[-500:]}")
    if end:
        events["output_dropped_bytes"] = end.get("dropped_output", 0)
        events["output_truncated"] = end.get("dropped_output", 0) > 0
        events["leftover_processes"] = end.get("leftovers", [])
        events["test_process_exit"] = end.get("exit")
    why_missing = _why_missing(ctx, events, kinds, end, last_test)
    events["_output"] = "".join(output)
    return results, events, why_missing


def _lang(ctx: Context) -> str:
    return i18n.language(ctx.lang or None)


def _after(last_test: str | None, _=i18n.translator("en")) -> str:
    return _("after {test}").format(test=last_test) if last_test else _("before any test reported")


def _why_missing(ctx: Context, events: dict, kinds: set, end: dict, last_test: str | None) -> str:
    _ = i18n.translator(_lang(ctx))
    if events["wall_clock_killed"]:
        return _("the whole run passed the wall-clock limit of {seconds} s and the container was killed").format(
            seconds=f"{ctx.limits.get('wall_clock', 0):g}")
    if events["oom_killed"]:
        return _("the container ran out of memory (limit {limit}) and was killed").format(limit=ctx.limits.get("memory"))
    if events["result_channel"] != "intact":
        return _("no result of this run is trusted: the result channel was {state}").format(
            state=events["result_channel"])
    if end and "done" not in kinds:
        status = end.get("exit")
        how = (_("was killed by signal {signal}").format(signal=-status) if isinstance(status, int) and status < 0
               else _("exited with status {status}").format(status=status))
        return _("the test process {how} {when}, before reporting this test "
                 "(did the submission call os._exit, sys.exit or kill its test runner?)").format(
            how=how, when=_after(last_test, _))
    return _("no result was reported for this test")


# -- scoring --------------------------------------------------------------------------


def _case_status(entry: dict) -> str:
    outcome = entry.get("outcome", "no_result")
    if outcome in ("failed", "error") and "Timeout" in str(entry.get("message", "")):
        return "timeout"
    return outcome if outcome in ("passed", "failed", "error", "skipped", "no_result") else "failed"


_STATUS_ORDER = ["no_result", "timeout", "error", "failed", "skipped", "not_run", "passed"]


def score_rows(ctx: Context, results: dict, why_missing: str, lang: str | None = None) -> list[dict]:
    lang = i18n.language(lang or ctx.lang or None)
    cases_by_key: dict[str, list[str]] = {}
    for norm in ctx.expected:
        cases_by_key.setdefault(labs.test_key(norm), []).append(norm)
    rows = []
    for key, spec in ctx.lab.tests.items():
        if ctx.only_tests and key not in ctx.only_tests:
            continue
        cases = cases_by_key.get(key, [])
        statuses, durations, feedback, output = [], 0.0, "", ""
        for norm in cases:
            if ctx.run is None:
                entry = {"outcome": "not_run", "message": ctx.not_run_reason}
            else:
                entry = results.get(norm) or {"outcome": "no_result", "message": why_missing}
            status = "not_run" if entry["outcome"] == "not_run" else _case_status(entry)
            statuses.append(status)
            durations += float(entry.get("duration") or 0)
            if status != "passed" and not feedback:
                suffix = norm.partition("::")[2]
                label = f"[{suffix.partition('[')[2]}" if "[" in suffix else ""
                feedback = f"{label} {entry.get('message') or ''}".strip()[:FEEDBACK_CAP]
                output = str(entry.get("output") or "")[:FEEDBACK_CAP]
        if not cases:
            statuses = ["no_result"]
            feedback = i18n.gettext("this test was not collected: the lab's tests and lab.yaml disagree", lang)
        passed = statuses.count("passed")
        worst = min(statuses, key=_STATUS_ORDER.index)
        earned = spec.points * passed / len(statuses)
        rows.append({
            "name": key, "points": round(earned, 2), "max": spec.points, "status": worst,
            "hidden": spec.hidden, "duration": round(durations, 3), "cases": len(statuses), "passed": passed,
            "feedback": feedback if worst != "passed" else "",
            "hint": (ctx.lab.hint_for(key, lang) or "") if worst != "passed" else "",
            "output": output if worst != "passed" else "",
        })
    return rows


def build(ctx: Context, finished_at: float, lang: str | None = None) -> dict:
    """The report.json document, in ``lang`` (default: ``ctx.lang``, else :func:`i18n.language`)."""
    ctx.lang = i18n.language(lang or ctx.lang or None)
    results, events, why_missing = ({}, {}, "")
    if ctx.run is not None:
        results, events, why_missing = _read_run(ctx)
    output = events.pop("_output", "")
    rows = [] if ctx.error else score_rows(ctx, results, why_missing)
    status = "grader_error" if ctx.error else "graded"
    reason = ctx.error or ctx.not_run_reason or _graded_reason(events, why_missing, rows) or "; ".join(ctx.problems)
    stats = {}
    if ctx.run is not None:
        end = next((line for line in ctx.run.lines if line.get("t") == "end"), {})
        stats = dict(ctx.run.host_stats)
        stats.update({k: v for k, v in (end.get("stats") or {}).items() if v is not None})
        if end.get("stats"):
            stats["peak_processes"] = max(end["stats"].get("peak_processes", 0), ctx.run.host_stats.get("peak_processes", 0))
    ctx.notes += _limit_notes(ctx, events, stats)
    ctx.timings.update(started_at=ctx.started_at, finished_at=finished_at,
                       total_seconds=round(finished_at - ctx.started_at, 3))
    return {
        "schema": "ipclab-report", "schema_version": SCHEMA_VERSION,
        "status": status, "reason": reason, "lang": ctx.lang,
        "lab": {"id": ctx.lab.id, "name": ctx.lab.name, "title": ctx.lab.title},
        "submission": {"id": ctx.student_id, "path": str(ctx.submission), "sha256": ctx.submission_sha256},
        "kit_version": ctx.kit_version,
        "image": {"tag": ctx.image_tag, "id": ctx.image_id},
        "container_id": getattr(ctx.run, "container_id", ""),
        "tests_hash": _safe_tests_hash(ctx.lab),
        "only_tests": ctx.only_tests,
        "score": round(sum(r["points"] for r in rows), 2) if not ctx.error else 0.0,
        "max_score": round(sum(r["max"] for r in rows), 2) if rows else float(labs.TOTAL_POINTS),
        "tests": rows,
        "problems": ctx.problems,
        "notes": ctx.notes,
        "limits": ctx.limits,
        "events": events,
        "resources": stats,
        "timings": ctx.timings,
        "output": output,
    }


def _limit_notes(ctx: Context, events: dict, stats: dict) -> list[str]:
    """Sentences for the limits the submission ran into."""
    notes, _ = [], i18n.translator(_lang(ctx))
    if events.get("output_truncated"):
        notes.append(_("The tests' output was cut after {size}: {dropped} more bytes were dropped.").format(
            size=ctx.limits.get("output"), dropped=f"{events['output_dropped_bytes']:,}"))
    pids = ctx.limits.get("pids")
    if pids and stats.get("peak_processes", 0) >= pids:
        notes.append(_("The submission reached the limit of {pids} processes (a fork bomb?); "
                       "further fork() calls failed.").format(pids=pids))
    if events.get("leftover_processes"):
        cmds = ", ".join(p.get("cmd", "?")[:60] for p in events["leftover_processes"][:3])
        notes.append(_("Processes still running after the tests were killed: {commands}.").format(commands=cmds))
    return notes


def _safe_tests_hash(lab) -> str:
    from grader.grade import tests_hash

    try:
        return tests_hash(lab)
    except OSError:
        return ""


def _graded_reason(events: dict, why_missing: str, rows: list[dict]) -> str:
    if events.get("wall_clock_killed") or events.get("oom_killed") or events.get("result_channel", "intact") != "intact":
        return why_missing[0].upper() + why_missing[1:] + "."
    if any(r["status"] == "no_result" for r in rows):
        return why_missing[0].upper() + why_missing[1:] + "."
    return ""


# -- writing --------------------------------------------------------------------------


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_all(report: dict, out_dir: Path, lang: str | None = None) -> None:
    """Write the reports; ``lang`` defaults to the report's own (``report["lang"]``)."""
    lang = i18n.language(lang or report.get("lang") or None)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(out_dir / "report.json", json.dumps(report, indent=2, ensure_ascii=False))
    try:
        html = render_html(report, lang=lang)
    except Exception as exc:  # the JSON report must survive a template bug
        html = f"<!DOCTYPE html><title>report</title><p>report.html could not be rendered ({type(exc).__name__}); see report.json</p>"
    _write_atomically(out_dir / "report.html", html)
    if report["status"] == "graded":
        _write_atomically(out_dir / "results.json", json.dumps(gradescope(report, lang=lang), indent=2, ensure_ascii=False))
        _write_atomically(out_dir / "junit.xml", junit_xml(report))
    else:
        for stale in ("results.json", "junit.xml"):
            (out_dir / stale).unlink(missing_ok=True)


def gradescope(report: dict, lang: str | None = None) -> dict:
    """Gradescope's results.json: hidden tests stay hidden until grades are published.

    The feedback (``output``) is in ``lang`` (default: the report's own).
    """
    _ = i18n.translator(i18n.language(lang or report.get("lang") or None))
    tests = []
    for row in report["tests"]:
        text = "\n".join(filter(None, [row["feedback"], _("Hint: {hint}").format(hint=row["hint"]) if row["hint"] else ""]))
        tests.append({
            "name": row["name"], "score": row["points"], "max_score": row["max"],
            "status": "passed" if row["status"] == "passed" else "failed",
            "output": text, "visibility": "after_published" if row["hidden"] else "visible",
        })
    summary = [f"{report['lab']['id']}: {report['score']:g}/{report['max_score']:g}"]
    summary += [report["reason"]] if report["reason"] else []
    summary += report["problems"]
    return {
        "score": report["score"],
        "execution_time": round(report["timings"].get("total_seconds", 0), 3),
        "output": "\n".join(summary),
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def junit_xml(report: dict) -> str:
    rows = report["tests"]
    failures = sum(r["status"] in ("failed", "timeout", "no_result", "not_run") for r in rows)
    errors = sum(r["status"] == "error" for r in rows)
    skipped = sum(r["status"] == "skipped" for r in rows)
    suites = ET.Element("testsuites")
    suite = ET.SubElement(suites, "testsuite", name=report["lab"]["id"], tests=str(len(rows)),
                          failures=str(failures), errors=str(errors), skipped=str(skipped),
                          time=f"{sum(r['duration'] for r in rows):.3f}")
    props = ET.SubElement(suite, "properties")
    for name, value in (("score", report["score"]), ("max_score", report["max_score"]),
                        ("submission", report["submission"]["id"]), ("reason", report["reason"])):
        ET.SubElement(props, "property", name=name, value=str(value))
    for row in rows:
        filename, _, test = row["name"].partition("::")
        case = ET.SubElement(suite, "testcase", classname=filename.removesuffix(".py"), name=test,
                             time=f"{row['duration']:.3f}")
        message = f"{row['points']:g}/{row['max']:g} points: {row['feedback']}"
        body = "\n".join(filter(None, [row["feedback"], f"Hint: {row['hint']}" if row["hint"] else "", row["output"]]))
        if row["status"] == "error":
            ET.SubElement(case, "error", message=message).text = body
        elif row["status"] == "skipped":
            ET.SubElement(case, "skipped", message=message)
        elif row["status"] != "passed":
            ET.SubElement(case, "failure", message=message, type=row["status"]).text = body
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def render_html(report: dict, lang: str | None = None) -> str:
    """report.html in ``lang`` (default: the report's own, else :func:`i18n.language`)."""
    env = i18n.jinja_env(i18n.language(lang or report.get("lang") or None),
                         loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                         autoescape=jinja2.select_autoescape(["html", "j2"]),
                         undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2").render(report=report, generated=time.strftime("%Y-%m-%d %H:%M"))
