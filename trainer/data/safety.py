"""Where dataset files may come from, and which names inside a dataset are safe to follow.

Two rules hold everywhere in `trainer.data`:
- a dataset folder lies inside an allowed root (`confine`): ComfyUI's input directory for the nodes,
  the given folder itself headless, plus whatever the server operator lists in LORA_STUDIO_ALLOWED_ROOTS;
- a name read from inside a dataset (a metadata.jsonl line, a ZIP entry) is a plain relative path
  (`relative_name`) and, once joined and symlinks resolved, stays inside its dataset (`inside`).
"""
from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import ConfigError, DatasetError, Problem

log = logging.getLogger("lora_studio.data")

ALLOWED_ROOTS_ENV = "LORA_STUDIO_ALLOWED_ROOTS"
# Pointing the trainer at "/" or a home folder by mistake must end quickly with an explanation.
MAX_WALK_FILES = 50_000
# Caption files and metadata are text; anything bigger is not what it claims to be.
MAX_CAPTION_BYTES = 64 * 1024
MAX_METADATA_BYTES = 32 * 1024 * 1024

_WINDOWS_FORBIDDEN = re.compile(r'[<>:"|?*\x00-\x1f]')
_WINDOWS_DEVICES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def env_allowed_roots() -> list[Path]:
    """The operator's extra roots: LORA_STUDIO_ALLOWED_ROOTS, separated by os.pathsep (':' or ';')."""
    raw = os.environ.get(ALLOWED_ROOTS_ENV, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def confine(path: str | Path, allowed_roots: list[str | Path] | None, *, env: bool = True) -> Path:
    """Resolve `path` (symlinks included) and make sure it lies inside one of the allowed roots.

    A relative path means a folder inside the first allowed root. LORA_STUDIO_ALLOWED_ROOTS adds roots
    (unless `env` is False: for places only the trainer itself writes to, such as checkpoints).
    Returns the resolved path; raises DatasetError naming the path, the roots and the fix.
    """
    if path is None or not str(path).strip():
        raise DatasetError("No dataset folder given. Fix: enter the folder that holds the images (or upload a ZIP).")
    if "\x00" in str(path):
        raise DatasetError(f"Dataset path {shown(str(path))!r} contains a NUL character. Fix: give a plain folder path.")
    if not is_text(str(path)):
        raise DatasetError(f"Dataset path '{shown(str(path))}' is not valid UTF-8 text (\\x.. marks the bytes that are "
                           "not), so it cannot be shown or saved in the job record. Fix: rename the folder (letters, "
                           "digits, '-' and '_' are always safe).")
    roots = [Path(r).expanduser() for r in (allowed_roots or []) if str(r).strip()] + (env_allowed_roots() if env else [])
    if not roots:
        raise DatasetError(f"No allowed dataset folders are configured, so '{path}' cannot be used. Fix: set "
                           f"{ALLOWED_ROOTS_ENV} to the folders datasets may come from.")
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = roots[0] / p
    try:
        resolved = p.resolve()
        resolved_roots = [r.resolve() for r in roots]
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop on older Pythons
        raise DatasetError(f"Dataset path '{path}' cannot be resolved ({e}). Fix: check for symlink loops.") from None
    for r in resolved_roots:
        if resolved == r or r in resolved.parents:
            return resolved
    listed = ", ".join(str(r) for r in resolved_roots)
    raise DatasetError(f"Dataset path '{path}' (resolved: {resolved}) is outside the allowed folders ({listed}). "
                       f"Fix: put the dataset into one of them, or have the server operator add its parent folder "
                       f"to {ALLOWED_ROOTS_ENV} (several separated by '{os.pathsep}').")


def is_text(name: str) -> bool:
    """True if `name` is real text. A file name that is not valid UTF-8 (made under another locale, or copied
    from an old disk) reaches Python with its bytes escaped as lone surrogates, which can be neither printed,
    logged, hashed as text nor saved in a JSON record; JSON's "\\udcff" escapes produce the same."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def shown(name: str | os.PathLike) -> str:
    """A path as printable text: the bytes that are not UTF-8 written as \\xNN (what `ls -b` shows)."""
    raw = os.fsencode(name) if not isinstance(name, str) or is_text(name) or _escaped_only(name) else None
    if raw is None:  # lone surrogates that are not escaped bytes (from JSON): show their code points
        return name.encode("utf-8", "backslashreplace").decode("ascii", "replace") if isinstance(name, str) else ""
    return raw.decode("utf-8", "backslashreplace")


def _escaped_only(name: str) -> bool:
    return all(not "\ud800" <= c <= "\udfff" or "\udc80" <= c <= "\udcff" for c in name)


# Config fields naming a folder the run reads. On a shared server (ComfyUI) a user types them into Configure
# LoRA's `extra`: like the dataset they must stay inside the allowed roots, or anyone could train on (or
# probe) another user's folder. `resume_from` loads tensors, so it may only name this server's checkpoints.
READ_FOLDER_FIELDS = ("class_data_dir", "tokenizer_dir", "model_config_dir")
RESUME_WORDS = ("", "auto", "latest")


def confine_config_paths(data: dict, read_roots: list[Path], checkpoints_root: Path, *,
                         dataset_roots: list[Path] | None = None, model_roots: list[Path] | None = None) -> dict:
    """A copy of a config dict whose user-set folders are resolved inside their roots.

    `read_roots`: where class pictures, tokenizer files and model configs may come from (ComfyUI: the input
    folder, its models folder and LORA_STUDIO_ALLOWED_ROOTS); `checkpoints_root`: the only place `resume_from`
    may name; `dataset_roots` / `model_roots` (when given): where `dataset` and `base_model` must lie — a
    config or dataset sent straight to the API as a literal never passed Load Dataset or Configure LoRA.
    Empty fields stay empty (the run's defaults apply). Raises ConfigError naming every field."""
    out, problems = dict(data), []
    for name, roots, allowed, fix in (
            ("dataset", dataset_roots, "a dataset folder inside", "load it with Load Dataset from ComfyUI's input folder"),
            ("base_model", model_roots, "a checkpoint inside", "pick it in Configure LoRA's list of checkpoints")):
        value = out.get(name)
        if roots is None or not isinstance(value, str) or not value.strip():
            continue
        try:
            out[name] = str(confine(value, roots) if name == "dataset" else _lexically_inside(value, roots))
        except DatasetError:
            extra = env_allowed_roots() if name == "dataset" else []
            problems.append(Problem(name, shown(value), f"{allowed} {', '.join(str(r) for r in [*roots, *extra])}",
                                    fix))
    for name in READ_FOLDER_FIELDS:
        value = out.get(name)
        if not isinstance(value, str) or not value.strip():
            continue
        try:
            out[name] = str(confine(value, read_roots))
        except DatasetError:
            listed = ", ".join(str(r) for r in [*read_roots, *env_allowed_roots()])
            problems.append(Problem(name, shown(value), f"a folder inside {listed}",
                                    f"copy the folder into ComfyUI's input folder and give its name there, or ask the "
                                    f"server operator to add its parent folder to {ALLOWED_ROOTS_ENV}"))
    resume = out.get("resume_from")
    if isinstance(resume, str) and resume.strip().lower() not in RESUME_WORDS:
        try:
            out["resume_from"] = str(confine(resume, [checkpoints_root], env=False))
        except DatasetError:
            problems.append(Problem("resume_from", shown(resume), f"'auto', 'latest' or a checkpoint folder inside "
                                    f"{checkpoints_root}", "use 'latest' to continue this LoRA's newest checkpoint"))
    if problems:
        raise ConfigError(problems)
    return out


def _lexically_inside(value: str, roots: list[Path]) -> Path:
    """`value` (relative: inside the first root) below one of `roots` by its path alone. Symlinks are not
    resolved: operators link checkpoints in from other disks, and a browser user cannot make links."""
    p = Path(value).expanduser()
    p = Path(os.path.normpath(p if p.is_absolute() else roots[0] / p))
    for r in roots:
        r = Path(os.path.normpath(Path(r).expanduser().absolute()))
        if p == r or r in p.parents:
            return p
    raise DatasetError(f"'{value}' is outside {', '.join(map(str, roots))}")


# The file system's root and the operating system's own folders never hold a LoRA, a record or a cache:
# `output_dir: "/"` is a typo, and on a server running as root it would scatter files where they break things.
SYSTEM_FOLDERS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/sbin", "/sys", "/usr/bin",
                  "/usr/include", "/usr/lib", "/usr/lib64", "/usr/sbin", "/usr/share", "C:/Windows")
# Shared by everyone: refused themselves, their sub-folders are fine (/var/lib/comfyui, /home/me/loras, /tmp/x).
TOP_FOLDERS = ("/home", "/Users", "/usr", "/var", "/tmp", "/root", "/mnt", "/media", "/opt", "/srv", "/run",
               "C:/Users", "C:/Program Files", "C:/Program Files (x86)")


def system_folder_problem(folder: str | Path) -> str | None:
    """Why `folder` must not receive our files (None if it may): the file system root, a drive root, a system
    folder or a top-level folder shared by everyone (a sub-folder of /home or /tmp is fine)."""
    try:
        p = Path(folder).expanduser().resolve()
    except (OSError, RuntimeError):
        return None  # folder_problem reports what cannot be resolved
    if p == Path(p.anchor):
        return f"'{p}' is the root of the file system"
    posix = p.as_posix()
    for sysdir in SYSTEM_FOLDERS:
        if posix.lower() == sysdir.lower() or posix.lower().startswith(sysdir.lower() + "/"):
            return f"'{p}' is a system folder"
    if any(posix.lower() == top.lower() for top in TOP_FOLDERS):
        return f"'{p}' is a top-level folder shared by everyone; use a folder inside it"
    return None


def inside(root: Path, candidate: Path) -> bool:
    """True if `candidate` (symlinks resolved) lies inside `root`."""
    try:
        candidate.resolve().relative_to(root.resolve())
        return True
    except (ValueError, OSError, RuntimeError):
        return False


def relative_name(name: str, strict: bool = True) -> PurePosixPath:
    """Check a name read from a dataset file or a ZIP and return it as a relative POSIX path.

    Backslashes count as separators (files made on Windows use them). Always refused with DatasetError:
    empty names, absolute paths, drive letters, UNC paths, '..', NUL. `strict` (names of files about to
    be created, i.e. ZIP entries) also refuses characters Windows forbids (':' would name an NTFS
    alternate data stream), device names such as CON or NUL, and trailing dots or spaces.
    """
    if not isinstance(name, str) or not name.strip():
        raise DatasetError("an empty file name. Fix: name the file relative to the dataset (e.g. \"0001.png\").")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or re.match(r"^[A-Za-z]:", unified):
        raise DatasetError(f"'{name}' is an absolute path, which would point outside the dataset folder. "
                           "Fix: use a path relative to the dataset (e.g. \"images/0001.png\").")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if not parts:
        raise DatasetError(f"'{name}' names no file. Fix: name the file relative to the dataset.")
    for part in parts:
        if part == "..":
            raise DatasetError(f"'{name}' climbs out of the dataset folder with '..'. "
                               "Fix: use a path relative to the dataset without '..'.")
        if "\x00" in part:
            raise DatasetError(f"{name!r} contains a NUL character. Fix: rename the file.")
        if not strict:
            continue
        if _WINDOWS_FORBIDDEN.search(part):
            raise DatasetError(f"'{name}' contains a character that is not allowed in file names "
                               "(one of < > : \" | ? * or a control character). Fix: rename the file.")
        if part.split(".")[0].lower() in _WINDOWS_DEVICES or part != part.rstrip(" ."):
            raise DatasetError(f"'{name}' is a reserved device name or ends in a dot or space. Fix: rename the file.")
    return PurePosixPath(*parts)


def safe_folder_name(name: str) -> str:
    """A single folder name for an imported dataset: letters, digits, '-', '_', '.', spaces."""
    if "/" in name or "\\" in name or name.strip() in (".", ".."):
        raise DatasetError(f"Dataset name '{name}' is not a plain folder name. Fix: use letters, digits, '-' or '_' "
                           "without slashes.")
    cleaned = re.sub(r"[^\w.\- ]", "_", name).strip(" .")[:80]
    if not cleaned:
        raise DatasetError(f"Dataset name '{name}' has no usable characters. Fix: use letters, digits, '-' or '_'.")
    return cleaned


@dataclass
class WalkResult:
    files: list[Path]  # regular files (or symlinks to regular files inside the root), sorted
    unsafe: list[tuple[Path, str]]  # symlinks leading outside the root: (path, target)
    unreadable: list[Path]  # folders this process may not list
    undecodable: list[Path] = field(default_factory=list)  # names that are not UTF-8 (skipped, folders whole)


def walk(root: Path, skip_hidden: bool = True) -> WalkResult:
    """List the files under `root` without following symlinked folders out of it.

    A symlink whose target lies outside `root` is returned in `unsafe`, never in `files`;
    a folder that cannot be read is returned in `unreadable`, a name that is not UTF-8 in `undecodable`. Hidden entries and macOS
    resource-fork folders (`__MACOSX`) are skipped.
    """
    root_resolved = root.resolve()
    out = WalkResult([], [], [])
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            log.warning("cannot list %s: %s", folder, e)
            out.unreadable.append(folder)
            continue
        for e in entries:
            if skip_hidden and (e.name.startswith(".") or e.name == "__MACOSX"):
                continue
            path = Path(e.path)
            if not is_text(e.name):
                out.undecodable.append(path)
                continue
            try:
                is_link = e.is_symlink()
                if is_link:
                    target = path.resolve()
                    if not (target == root_resolved or root_resolved in target.parents):
                        out.unsafe.append((path, str(target)))
                        continue
                    if target.is_dir():
                        continue  # a folder linked from inside the dataset: its files are found directly
                mode = os.stat(path).st_mode
            except (OSError, RuntimeError) as err:
                log.warning("cannot inspect %s: %s", path, err)
                out.unreadable.append(path)
                continue
            if stat.S_ISDIR(mode):
                stack.append(path)
            elif stat.S_ISREG(mode):
                out.files.append(path)
                if len(out.files) > MAX_WALK_FILES:
                    raise DatasetError(f"'{root}' holds more than {MAX_WALK_FILES} files; this does not look like a "
                                       "dataset folder. Fix: give the folder that holds the training images only.")
    out.files.sort()
    return out
