"""Record `polyocr doctor` and the cost of the runtime probe on this machine, as Markdown.

Each probe runs in a fresh process, as a user's first polyocr call does, so its time includes
importing torch and initialising CUDA; the first run is also the machine's first CUDA start. One
more fresh process runs every check (`probe(kernels=True)`) to show where the time goes.

    PYTHONPATH=src python3 benchmarks/doctor_probe.py OUT_DIR [--runs 3] [--name h100]

writes OUT_DIR/profile-NAME.json (the first probe's profile, to keep as a recorded fixture),
OUT_DIR/doctor-NAME.json and OUT_DIR/doctor-NAME.md (command, machine, date, timings, report).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

PROBE = "import sys; from polyocr.runtime.probe import probe; sys.stdout.write(probe({}).to_json())"


def _run(args: list[str], env: dict[str, str]) -> tuple[str, float]:
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    return result.stdout, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--name", default="machine")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "COLUMNS": "150", "HF_HUB_OFFLINE": "1"}

    rows, first = [], None
    for run in range(1, args.runs + 1):
        text, wall = _run([sys.executable, "-c", PROBE.format("")], env)
        profile = json.loads(text)
        first = first or profile
        rows.append(f"| {run} | {wall:.2f} | {profile['probe_seconds']:.2f} |")
    (args.out / f"profile-{args.name}.json").write_text(json.dumps(first, indent=2) + "\n")
    full = json.loads(_run([sys.executable, "-c", PROBE.format("kernels=True")], env)[0])
    steps = [f"| {step} | {seconds:.2f} |" for step, seconds in full["timings"].items()]
    steps += [
        f"| check {name} | {check['seconds']:.2f} |" for name, check in full["attention"].items() if check["seconds"]
    ]
    doctor_json, json_wall = _run([sys.executable, "-m", "polyocr", "doctor", "--json"], env)
    (args.out / f"doctor-{args.name}.json").write_text(doctor_json)
    doctor_text, text_wall = _run([sys.executable, "-m", "polyocr", "doctor"], env)

    gpus = "no nvidia-smi"
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        gpus = subprocess.run(query, capture_output=True, text=True).stdout.strip()
    torch = first["torch"] or {}
    command = f"PYTHONPATH=src python3 benchmarks/doctor_probe.py OUT --runs {args.runs} --name {args.name}"
    report = f"""# `polyocr doctor` on {args.name}

- command: `{command}`
- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC
- machine: {gpus}; {first["cpu_count"]} CPUs; {first["os"]}; Python {first["python"]}
- torch {torch.get("version")} (CUDA {torch.get("cuda")}), transformers {first["packages"].get("transformers")}

## Probe cost, each run in a fresh process

| run | process wall time, s (Python start, imports, probe) | `probe()` itself, s |
| --- | --- | --- |
{chr(10).join(rows)}

`polyocr doctor --json`: {json_wall:.2f} s wall; `polyocr doctor`: {text_wall:.2f} s wall (both also run any
deferred checks, and import every engine module).

## Where the time goes: `probe(kernels=True)` (every check, none deferred) in a fresh process

| step | s |
| --- | --- |
{chr(10).join(steps)}
| total `probe()` | {full["probe_seconds"]:.2f} |

## `polyocr doctor`

```
{doctor_text.rstrip()}
```
"""
    (args.out / f"doctor-{args.name}.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
