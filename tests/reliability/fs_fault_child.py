"""Run one ingest in a child process under a file-system fault, and report how it ended.

    python -m tests.reliability.fs_fault_child LANDING SNAPSHOTS QUARANTINE TABLE KEY [--max-file-bytes N]

`--max-file-bytes` lowers RLIMIT_FSIZE for this process only: a write past it fails with
EFBIG ("File too large"), the same path through the code as a full disk (ENOSPC) without
needing root to mount a small file system. (Python ignores SIGXFSZ, so the write returns the
error instead of the kernel killing the process.)

`--drop-privileges`: a root process bypasses file permissions through its capabilities
(CAP_DAC_OVERRIDE...), so the child drops all of them first (capset(2)); it stays uid 0 and
can still reach the interpreter under /root, but a folder without write permission for its
owner now refuses it with EACCES, as for any user. For a non-root user it changes nothing.

Prints one JSON line: {"ok": true, "sha256": ...} or {"ok": false, "error": type, "message": ...}.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import sys
from pathlib import Path


def drop_capabilities() -> None:
    """Empty this process's capability sets (effective, permitted, inheritable): capset(2)."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        ]

    libc = ctypes.CDLL(None, use_errno=True)
    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two 32-bit data words
    if libc.capset(ctypes.byref(header), (Data * 2)()) != 0:
        raise OSError(ctypes.get_errno(), "capset failed: cannot drop root's capabilities")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    for name in ("landing", "snapshots", "quarantine", "table", "key"):
        parser.add_argument(name)
    parser.add_argument("--max-file-bytes", type=int, default=None)
    parser.add_argument("--drop-privileges", action="store_true")
    args = parser.parse_args(argv)

    from mlops.storage import LocalStore
    from tasks.ingest import ingest_file

    if args.max_file_bytes is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.max_file_bytes, hard))
    if args.drop_privileges and os.geteuid() == 0:
        drop_capabilities()
    stores = [LocalStore(Path(p)) for p in (args.landing, args.snapshots, args.quarantine)]
    try:
        snapshot, _ = ingest_file(*stores, args.table, None, args.key)
    except Exception as exc:
        print(json.dumps({"ok": False, "error": type(exc).__name__, "message": str(exc)}))
        return 1
    print(json.dumps({"ok": True, "sha256": snapshot.sha256}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
