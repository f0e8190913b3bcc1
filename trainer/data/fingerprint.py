"""A dataset's fingerprint from names, sizes and modification times: cheap (no file is read), and it changes
when a picture or caption is added, removed, replaced or edited. Load Dataset gives it to ComfyUI's cache,
so a changed folder trains again while an unchanged graph stays cached."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def dataset_fingerprint(path: str | Path) -> str:
    p = Path(path)
    h = hashlib.sha256()
    if p.is_file():  # a ZIP: its own size and time
        st = p.stat()
        h.update(f"{p.name}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()
    for dirpath, dirnames, filenames in os.walk(p, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(f for f in filenames if not f.startswith(".")):
            f = Path(dirpath) / name
            try:
                st = f.stat()
            except OSError:  # vanished while we looked: it changes the fingerprint too
                st = None
            rel = f.relative_to(p).as_posix()
            h.update(f"{rel}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n".encode())
    return h.hexdigest()
