"""Run README's test command beside two CPU burners and say whether it passed and how long it took.

Not a test (pytest collects only ``test_*.py``): a check that the suite does not pace itself on
wall-clock time it cannot control. Two processes spinning ``while True: pass`` take the cores
the suite's workers want, so any test that sleeps a fixed time, or needs a step done within a
short epoch, is starved the way a loaded CI machine starves it.

    python tests/load/run_loaded.py [--runs N] [--burners 2] [--full] [--json]

The command is read from README.md's ``<!-- ci:test -->`` block, as ``.ci/run`` reads it. By
default the steps that make the virtual environment and install into it are left out and the
rest (``ruff check .``, pytest) run with this checkout's ``.venv/bin`` first on ``PATH``;
``--full`` runs the block as written. The burners are this script's children and are stopped by
their PIDs when it ends, however it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INSTALL_STEPS = ("python3 -m venv", "python -m venv", ". ", "source ", "pip install")


def readme_test_command(readme: Path = ROOT / "README.md") -> str:
    match = re.search(r"<!-- ci:test -->\s*```sh\n(.*?)\n```", readme.read_text(), re.S)
    if match is None:
        raise SystemExit(f"{readme}: no <!-- ci:test --> block")
    return match.group(1).strip()


def without_install(command: str) -> str:
    steps = [s.strip() for s in command.split("&&")]
    kept = [s for s in steps if not s.startswith(INSTALL_STEPS)]
    return " && ".join(kept)


def run_once(command: str, burners: int, log: Path | None = None) -> dict[str, object]:
    """One run; with ``log`` its output goes there as it is written (a slow run can be
    watched with ``tail -f``)."""
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    spinning = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(burners)]
    began = time.monotonic()
    try:
        with open(log or os.devnull, "w") as sink:
            done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, text=True,
                                  stdout=sink if log else subprocess.PIPE,
                                  stderr=subprocess.STDOUT, check=False)
        output = log.read_text() if log else done.stdout
    finally:
        for proc in spinning:
            proc.kill()
            proc.wait()
    seconds = time.monotonic() - began
    lines = output.strip().splitlines()
    tail = next((line for line in reversed(lines) if " in " in line and "=" in line),
                lines[-1] if lines else "")
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return {"ok": done.returncode == 0, "returncode": done.returncode,
            "seconds": round(seconds, 1), "summary": tail.strip("= "), "failures": failures,
            "output": output}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="runs one after the other")
    parser.add_argument("--burners", type=int, default=2, help="CPU burners beside the suite")
    parser.add_argument("--full", action="store_true",
                        help="run README's block as written (venv and install included)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per run")
    parser.add_argument("--log", type=Path, default=None,
                        help="write each run's whole output to LOG.N")
    args = parser.parse_args()
    command = readme_test_command()
    if not args.full:
        command = without_install(command)
    print(f"command: {command}  (beside {args.burners} burners)", file=sys.stderr, flush=True)
    ok = True
    for n in range(1, args.runs + 1):
        log = None if args.log is None else args.log.with_name(f"{args.log.name}.{n}")
        result = run_once(command, args.burners, log)
        ok = ok and bool(result["ok"])
        result.pop("output")
        result.update(run=n, command=command, burners=args.burners)
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            state = "PASS" if result["ok"] else "FAIL"
            print(f"run {n}: {state} in {result['seconds']:.0f} s: {result['summary']}",
                  flush=True)
            for line in result["failures"]:  # type: ignore[union-attr]
                print(f"  {line}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
