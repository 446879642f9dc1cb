"""The benchmark suite in one command: every section in its own process, then the report.

    python bench/run.py                       # all sections, full sizes → bench/REPORT.md + bench/plots/
    python bench/run.py --sections validation drift
    python bench/run.py --report-only         # rebuild REPORT.md from the JSON already in --results
    python bench/run.py --smoke --results /tmp/x --report /tmp/x/REPORT.md   # tiny sizes (the test)

Sections (each script also runs alone; see its docstring for what it measures):

| section     | scripts                                            |
| ----------- | -------------------------------------------------- |
| training    | training_overhead.py, task_overhead.py             |
| validation  | validation.py                                      |
| drift       | drift.py                                           |
| serving     | serving.py                                         |
| scaling     | scaling.py (data from scale_data.py)               |
| cold_start  | cold_start.py                                      |

Each script writes `<results>/<name>.json` (stamped with its run date and the machine) and
its output to `<results>/<name>.log`; a section that fails is recorded as failed, with the
end of its log, and the others still run. Run it under `nice -n 19` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS_DIR, ROOT, write_result

BENCH = ROOT / "bench"

# name -> (section, full arguments, smoke arguments)
SCRIPTS: dict[str, tuple[str, list[str], list[str]]] = {
    "training_overhead": ("training", [], ["--sample", "0.05", "--start", "2013-01", "--end", "2013-06"]),
    "task_overhead": ("training", [], ["--tasks", "5", "--repeats", "1"]),
    "validation": ("validation", [], ["--sample", "0.03", "--repeats", "1", "--months", "1"]),
    "drift": ("drift", [], ["--sample", "0.05", "--repeats", "1", "--quick"]),
    "serving": ("serving", [], ["--sample", "0.03", "--seconds", "1", "--repeats", "1", "--samples", "50"]),
    "serving_stages": ("serving", [], ["--sample", "0.03", "--repeats", "2"]),
    "scaling": ("scaling", [], ["--sizes", "6000", "12000", "--max-train-rows", "2000"]),
    "cold_start": ("cold_start", [], ["--repeats", "1"]),
}
REPEATABLE = {
    "training_overhead",
    "task_overhead",
    "validation",
    "drift",
    "serving",
    "serving_stages",
    "cold_start",
}
SECTIONS = ["training", "validation", "drift", "serving", "scaling", "cold_start"]


def run_script(name: str, args: list[str], results: Path) -> bool:
    out, log = results / f"{name}.json", results / f"{name}.log"
    out.unlink(missing_ok=True)
    print(f"[{time.strftime('%H:%M:%S')}] {name} {' '.join(args)}", flush=True)
    started = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, str(BENCH / f"{name}.py"), *args, "--out", str(out)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            returncode = proc.wait()
        except BaseException:  # stopped: let the script stop the servers it started
            proc.terminate()
            proc.wait(120)
            raise
    seconds = time.perf_counter() - started
    if returncode != 0 or not out.exists():
        tail = log.read_text()[-2000:]
        write_result(
            results / f"{name}.failed.json",
            name,
            {"error": f"exit code {returncode} after {seconds:.0f} s", "log_tail": tail},
        )
        print(f"    failed (exit {returncode}); see {log}", flush=True)
        return False
    (results / f"{name}.failed.json").unlink(missing_ok=True)
    print(f"    done in {seconds:.0f} s", flush=True)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=SECTIONS)
    parser.add_argument(
        "--scripts",
        nargs="+",
        choices=list(SCRIPTS),
        default=None,
        help="only these scripts (overrides --sections)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness, not the speed")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="JSON and logs; default bench/results (git-ignored), smoke: a temp dir",
    )
    parser.add_argument(
        "--report", type=Path, default=None, help="default: bench/REPORT.md (smoke: in --results)"
    )
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="repeats for every script that repeats (fewer: faster, noisier)",
    )
    args = parser.parse_args()
    from bench.common import exit_on_sigterm

    exit_on_sigterm()
    if args.results is None:
        args.results = Path(tempfile.mkdtemp(prefix="bench-smoke-")) if args.smoke else RESULTS_DIR
    args.results.mkdir(parents=True, exist_ok=True)
    # A smoke run never overwrites the committed report.
    args.report = args.report or (args.results / "REPORT.md" if args.smoke else BENCH / "REPORT.md")

    if not args.report_only:
        for name, (section, full, smoke) in SCRIPTS.items():
            if (name in args.scripts) if args.scripts else (section in args.sections):
                extra = ["--repeats", str(args.repeats)] if args.repeats and name in REPEATABLE else []
                run_script(name, [*(smoke if args.smoke else full), *extra], args.results)

    from bench.report import write_report

    path = write_report(args.results, args.report, smoke=args.smoke)
    print(f"report: {path}")
    print(json.dumps({"report": str(path)}))


if __name__ == "__main__":
    main()
