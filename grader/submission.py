"""Turning what a student handed in into a clean folder of files, safely.

A submission is a folder, a ``.zip`` or a ``.tar.gz``/``.tgz`` holding the
lab's module files at the top or one folder down (``lab1/pipeline.py``).
``prepare`` copies or unpacks it into a fresh folder and never runs any of it:

* archives are checked member by member *before* anything is written: a path
  with ``..`` or an absolute path, a symlink or hard link, a device file or a
  FIFO, or more than ``MAX_BYTES``/``MAX_FILES`` once unpacked (a zip bomb)
  rejects the whole submission, with a sentence saying why;
* file names that are not UTF-8 are left out and noted;
* missing modules are named (with the likely misnamed file, if any), syntax
  errors are found by compiling (not running) each module on the host.

The result says whether the tests can run at all (``runnable``) and carries
the sentences a student will read in the report (``problems``, ``notes``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from grader import i18n
from grader.i18n import N_

MAX_BYTES = 20 * 1024 * 1024
MAX_FILES = 2000
_IGNORED = {"__pycache__", "__MACOSX", ".git", ".DS_Store", ".pytest_cache", ".venv"}


class Rejected(Exception):
    """The submission cannot be unpacked safely; the message is for the student.

    ``message`` is an English catalog key with ``{placeholders}`` filled from
    ``params``; :meth:`text` says it in the student's language.
    """

    def __init__(self, message: str, **params):
        super().__init__(message.format(**params))
        self.message, self.params = message, params

    def text(self, _) -> str:
        return _(self.message).format(**self.params)


TOO_BIG = N_("the submission is over {mb} MB once unpacked (a compressed bomb?); it was not unpacked")


@dataclasses.dataclass
class Prepared:
    folder: Path                 # the lab's files are directly in here
    runnable: bool               # False: no test can run (empty, rejected)
    problems: list[str]          # why points were lost before any test ran
    notes: list[str]             # harmless remarks (extra files, skipped names)
    modules_found: list[str]
    modules_missing: list[str]


def submission_hash(path: Path | str) -> str:
    """Content hash of a submission folder or archive (a cache key)."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
            digest.update(os.fsencode(file.relative_to(path)) + b"\0")
            digest.update(file.read_bytes())
            digest.update(b"\0")
    elif path.is_file():
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    else:
        digest.update(b"missing:" + os.fsencode(path))
    return digest.hexdigest()


def prepare(submission: Path, modules: list[str], dest: Path, lang: str | None = None) -> Prepared:
    """Unpack ``submission`` into ``dest/submission`` and check it against ``modules``.

    Every sentence for the student (missing modules, syntax errors, extra
    files, why an archive was refused) is in ``lang`` (default:
    :func:`grader.i18n.language`).
    """
    unpacked = dest / "unpacked"
    folder = dest / "submission"
    unpacked.mkdir(parents=True)
    folder.mkdir()
    notes: list[str] = []
    _ = i18n.translator(i18n.language(lang))
    try:
        _unpack(Path(submission), unpacked, notes)
    except Rejected as exc:
        return Prepared(folder, False, [exc.text(_)], notes, [], list(modules))
    root = _lab_root(unpacked, modules)
    for item in root.iterdir():
        if item.name in _IGNORED:
            continue
        target = folder / item.name
        shutil.copytree(item, target) if item.is_dir() else shutil.copy2(item, target)
    return _check(folder, modules, notes, _)


def _unpack(source: Path, dest: Path, notes: list[str]) -> None:
    name = source.name.lower()
    if source.is_dir():
        _copy_folder(source, dest, notes)
    elif not source.exists():
        raise Rejected(N_("the submission {name} does not exist"), name=source.name)
    elif name.endswith(".zip"):
        _unzip(source, dest, notes)
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        _untar(source, dest, notes)
    else:
        raise Rejected(N_("{name} is neither a folder, a .zip nor a .tar.gz"), name=source.name)


def _safe_name(name: str | bytes, notes: list[str]) -> PurePosixPath | None:
    """The member's relative path, or None when it should be left out."""
    if isinstance(name, bytes):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError:
            notes.append(f"left out a file whose name is not UTF-8: {name.decode('utf-8', 'replace')!r}")
            return None
    if any("\udc80" <= ch <= "\udcff" for ch in name):
        notes.append(f"left out a file whose name is not UTF-8: {name.encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')!r}")
        return None
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith("/"):
        raise Rejected(N_("the archive holds an absolute path ({name}); it was not unpacked"), name=name)
    if ".." in path.parts:
        raise Rejected(N_("the archive holds a path that leaves its folder ({name}); it was not unpacked"), name=name)
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts or any(p in _IGNORED for p in parts):
        return None
    return PurePosixPath(*parts)


def _budget(count: int, size: int) -> None:
    if count > MAX_FILES:
        raise Rejected(N_("the submission holds more than {count} files; it was not unpacked"), count=MAX_FILES)
    if size > MAX_BYTES:
        raise Rejected(TOO_BIG, mb=MAX_BYTES // (1024 * 1024))


def _write(dest: Path, rel: PurePosixPath, stream, limit: int) -> int:
    target = dest.joinpath(*rel.parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(target, "wb") as out:
        for block in iter(lambda: stream.read(1 << 16), b""):
            written += len(block)
            if written > limit:  # the header lied about the size
                raise Rejected(TOO_BIG, mb=MAX_BYTES // (1024 * 1024))
            out.write(block)
    return written


def _unzip(source: Path, dest: Path, notes: list[str]) -> None:
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise Rejected(N_("{name} is not a readable zip file ({error})"), name=source.name, error=exc) from exc
    with archive:
        members = archive.infolist()
        _budget(len(members), sum(m.file_size for m in members))
        chosen = []
        for member in members:
            # Names flagged as UTF-8 are decoded; others arrive as cp437: keep their bytes.
            raw = member.filename if member.flag_bits & 0x800 else member.filename.encode("cp437")
            rel = _safe_name(raw, notes)
            mode = stat.S_IFMT(member.external_attr >> 16)  # 0 when the zip tool stored no type
            if mode and stat.S_ISLNK(mode):
                raise Rejected(N_("the archive holds a symbolic link ({name}); it was not unpacked"), name=member.filename)
            if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise Rejected(N_("the archive holds a special file ({name}); it was not unpacked"), name=member.filename)
            if rel is not None and not member.is_dir():
                chosen.append((member, rel))
        left = MAX_BYTES
        for member, rel in chosen:
            try:
                with archive.open(member) as stream:
                    left -= _write(dest, rel, stream, left)
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
                raise Rejected(N_("{member} in {name} cannot be read ({error})"), member=member.filename, name=source.name, error=exc) from exc


def _untar(source: Path, dest: Path, notes: list[str]) -> None:
    try:
        archive = tarfile.open(source, encoding="utf-8", errors="surrogateescape")
    except (tarfile.TarError, OSError) as exc:
        raise Rejected(N_("{name} is not a readable tar archive ({error})"), name=source.name, error=exc) from exc
    with archive:
        try:
            members = archive.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise Rejected(N_("{name} is a damaged tar archive ({error})"), name=source.name, error=exc) from exc
        _budget(len(members), sum(m.size for m in members))
        chosen = []
        for member in members:
            rel = _safe_name(member.name, notes)
            if member.issym() or member.islnk():
                raise Rejected(N_("the archive holds a link ({name} -> {target}); it was not unpacked"), name=member.name, target=member.linkname)
            if not (member.isfile() or member.isdir()):
                raise Rejected(N_("the archive holds a device or special file ({name}); it was not unpacked"), name=member.name)
            if rel is not None and member.isfile():
                chosen.append((member, rel))
        left = MAX_BYTES
        for member, rel in chosen:
            stream = archive.extractfile(member)
            if stream is not None:
                left -= _write(dest, rel, stream, left)


def _copy_folder(source: Path, dest: Path, notes: list[str]) -> None:
    count = size = 0
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        dirnames[:] = [d for d in dirnames if d not in _IGNORED]
        for filename in filenames:
            full = Path(dirpath) / filename
            rel_text = os.fsdecode(full.relative_to(source))
            info = full.lstat()
            if stat.S_ISLNK(info.st_mode):
                raise Rejected(N_("the submission holds a symbolic link ({name}); it was not graded"), name=rel_text)
            if not stat.S_ISREG(info.st_mode):
                raise Rejected(N_("the submission holds a device or special file ({name}); it was not graded"), name=rel_text)
            rel = _safe_name(rel_text, notes)
            if rel is None:
                continue
            count, size = count + 1, size + info.st_size
            _budget(count, size)
            target = dest.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(full, target)


def _lab_root(unpacked: Path, modules: list[str]) -> Path:
    """The folder holding the modules: the top, or the only folder one level down."""
    if any((unpacked / m).is_file() for m in modules):
        return unpacked
    for child in sorted(p for p in unpacked.iterdir() if p.is_dir()):
        if any((child / m).is_file() for m in modules):
            return child
    entries = list(unpacked.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return unpacked


def _check(folder: Path, modules: list[str], notes: list[str], _=i18n.translator("en")) -> Prepared:
    present = sorted(p.name for p in folder.rglob("*") if p.is_file())
    found = [m for m in modules if (folder / m).is_file()]
    missing = [m for m in modules if m not in found]
    problems = []
    for module in missing:
        guess = difflib.get_close_matches(module, [p for p in present if p.endswith(".py")] or present, n=1, cutoff=0.6)
        if guess:
            problems.append(_("{module} is missing (is {guess} meant to be {module}? file names must match exactly)").format(
                module=module, guess=guess[0]))
        else:
            problems.append(_("{module} is missing from the submission").format(module=module))
    for module in found:
        source = (folder / module).read_bytes()
        try:
            compile(source, module, "exec", dont_inherit=True)
        except SyntaxError as exc:
            problems.append(_("{module} has a syntax error on line {line}: {error}").format(
                module=module, line=exc.lineno, error=exc.msg))
        except ValueError as exc:  # e.g. null bytes
            problems.append(_("{module} cannot be compiled: {error}").format(module=module, error=exc))
    extra = [p for p in present if p not in modules]
    if extra:
        notes.append(_("extra files kept next to the modules: {files}").format(
            files=", ".join(extra[:10]) + (" ..." if len(extra) > 10 else "")))
    if not present:
        problems.append(_("the submission is empty"))
    runnable = bool(found)
    if not found and present:
        problems.append(_("none of the lab's files ({modules}) is in the submission").format(modules=", ".join(modules)))
    return Prepared(folder, runnable, problems, notes, found, missing)
