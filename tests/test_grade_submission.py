"""Unpacking submissions safely (grader/submission.py); no Docker needed."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from grader import submission

MODULES = ["pipeline.py", "fifo_log.py"]
GOOD = b"def run():\n    return 1\n"


def prepare(source: Path, tmp_path: Path) -> submission.Prepared:
    return submission.prepare(source, MODULES, tmp_path / "prepared")


def make_zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, add) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        add(tf)
    return path


def add_file(tf, name, data=GOOD):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def test_folder_with_both_modules(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for m in MODULES:
        (src / m).write_bytes(GOOD)
    prepared = prepare(src, tmp_path)
    assert prepared.runnable and not prepared.problems and prepared.modules_found == MODULES


@pytest.mark.parametrize("top", ["", "alice-lab1/"])
def test_zip_at_top_or_one_folder_down(tmp_path, top):
    archive = make_zip(tmp_path / "s.zip", {f"{top}{m}": GOOD for m in MODULES} | {f"{top}README.txt": b"hi"})
    prepared = prepare(archive, tmp_path)
    assert prepared.runnable and sorted(p.name for p in prepared.folder.iterdir()) == ["README.txt", *sorted(MODULES)]
    assert any("README.txt" in note for note in prepared.notes)


def test_tar_gz_one_folder_down(tmp_path):
    archive = make_tar(tmp_path / "s.tar.gz", lambda tf: [add_file(tf, f"sub/{m}") for m in MODULES])
    assert prepare(archive, tmp_path).modules_found == MODULES


def test_misnamed_module_is_named_with_a_guess(tmp_path):
    archive = make_zip(tmp_path / "s.zip", {"pipeline.py": GOOD, "fifolog.py": GOOD})
    prepared = prepare(archive, tmp_path)
    assert prepared.runnable and prepared.modules_missing == ["fifo_log.py"]
    assert any("fifolog.py" in p and "fifo_log.py" in p for p in prepared.problems)


def test_syntax_error_is_found_without_running_the_code(tmp_path):
    archive = make_zip(tmp_path / "s.zip", {"pipeline.py": b"def f(:\n", "fifo_log.py": b"open('/tmp/ran','w')\n"})
    prepared = prepare(archive, tmp_path)
    assert any("pipeline.py has a syntax error on line 1" in p for p in prepared.problems)


def test_empty_submission(tmp_path):
    (tmp_path / "empty").mkdir()
    prepared = prepare(tmp_path / "empty", tmp_path)
    assert not prepared.runnable and "the submission is empty" in prepared.problems


def test_only_unrelated_files(tmp_path):
    archive = make_zip(tmp_path / "s.zip", {"homework.docx": b"..."})
    prepared = prepare(archive, tmp_path)
    assert not prepared.runnable and any("none of the lab's files" in p for p in prepared.problems)


@pytest.mark.parametrize("name, why", [("../../evil.py", "leaves its folder"), ("/etc/evil.py", "absolute path"),
                                       ("a/../../evil.py", "leaves its folder")])
def test_zip_paths_that_escape_are_rejected(tmp_path, name, why):
    archive = make_zip(tmp_path / "s.zip", {name: GOOD, "pipeline.py": GOOD})
    prepared = prepare(archive, tmp_path)
    assert not prepared.runnable and why in prepared.problems[0]
    assert not (tmp_path / "evil.py").exists() and not list(tmp_path.rglob("evil.py"))


def test_tar_symlink_and_device_are_rejected(tmp_path):
    def with_link(tf):
        add_file(tf, "pipeline.py")
        link = tarfile.TarInfo("fifo_log.py")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)

    def with_device(tf):
        add_file(tf, "pipeline.py")
        dev = tarfile.TarInfo("fifo_log.py")
        dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
        tf.addfile(dev)

    linked = prepare(make_tar(tmp_path / "l.tar.gz", with_link), tmp_path / "a")
    assert not linked.runnable and "link" in linked.problems[0]
    device = prepare(make_tar(tmp_path / "d.tar.gz", with_device), tmp_path / "b")
    assert not device.runnable and "special file" in device.problems[0]


def test_zip_symlink_is_rejected(tmp_path):
    archive = tmp_path / "s.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("fifo_log.py")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
        zf.writestr("pipeline.py", GOOD)
    prepared = prepare(archive, tmp_path)
    assert not prepared.runnable and "symbolic link" in prepared.problems[0]


def test_folder_with_a_symlink_is_rejected(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "pipeline.py").write_bytes(GOOD)
    (src / "fifo_log.py").symlink_to("/etc/passwd")
    prepared = prepare(src, tmp_path)
    assert not prepared.runnable and "symbolic link" in prepared.problems[0]


def test_zip_bomb_is_rejected_before_unpacking(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pipeline.py", b"\0" * (submission.MAX_BYTES + 1))
    assert archive.stat().st_size < 200_000
    prepared = prepare(archive, tmp_path)
    assert not prepared.runnable and "MB once unpacked" in prepared.problems[0]
    assert not (prepared.folder / "pipeline.py").exists()


def test_zip_whose_header_lies_about_size_is_stopped(tmp_path, monkeypatch):
    archive = make_zip(tmp_path / "s.zip", {"pipeline.py": b"x" * 5000})
    monkeypatch.setattr(submission, "MAX_BYTES", 1000)
    monkeypatch.setattr(submission, "_budget", lambda count, size: None)  # as if the header said 0 bytes
    prepared = prepare(archive, tmp_path)
    assert not prepared.runnable and "MB once unpacked" in prepared.problems[0]


def test_non_utf8_file_names_are_left_out_and_noted(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for m in MODULES:
        (src / m).write_bytes(GOOD)
    (src / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"latin-1 name")
    prepared = prepare(src, tmp_path)
    assert prepared.runnable and any("not UTF-8" in n for n in prepared.notes)
    assert sorted(p.name for p in prepared.folder.iterdir()) == sorted(MODULES)

    archive = tmp_path / "s.tar.gz"
    with tarfile.open(archive, "w:gz", encoding="utf-8", errors="surrogateescape") as tf:
        add_file(tf, os.fsdecode(b"caf\xe9.py"))
        add_file(tf, "pipeline.py")
    prepared = prepare(archive, tmp_path / "t")
    assert prepared.runnable and any("not UTF-8" in n for n in prepared.notes)


def test_not_an_archive(tmp_path):
    (tmp_path / "s.rar").write_bytes(b"Rar!")
    (tmp_path / "broken.zip").write_bytes(b"PK not really")
    assert "neither a folder" in prepare(tmp_path / "s.rar", tmp_path / "a").problems[0]
    assert "not a readable zip" in prepare(tmp_path / "broken.zip", tmp_path / "b").problems[0]
    assert "does not exist" in prepare(tmp_path / "nope", tmp_path / "c").problems[0]


def test_submission_hash_is_stable_and_content_based(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "pipeline.py").write_bytes(GOOD)
    assert submission.submission_hash(a) == submission.submission_hash(b)
    (b / "pipeline.py").write_bytes(GOOD + b"#")
    assert submission.submission_hash(a) != submission.submission_hash(b)
