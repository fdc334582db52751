#!/usr/bin/env python3
"""Copy a run_harness.sh output into tests/fixtures/engine/: the stripped logs, their entries in fixtures.json
(replacing entries with the same log name) and each model's header (the bytes before the tensor data).

Usage: import_fixtures.py OUT_DIR MODEL_DIR [HEADER_NAME_FOR=MODEL.gguf ...]
A model header is written as <model stem>.header.gguf unless mapped, e.g. t94-plan.gguf=t94-plan.header.gguf.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEST = REPO / "tests" / "fixtures" / "engine"
sys.path.insert(0, str(REPO))


def main() -> int:
    out, models = Path(sys.argv[1]), Path(sys.argv[2])
    rename = dict(arg.split("=", 1) for arg in sys.argv[3:])
    from planner.gguf_header import read_gguf

    manifest_path = DEST / "fixtures.json"
    manifest = json.loads(manifest_path.read_text())
    entries = {e["log"]: e for e in manifest["fixtures"]}
    for line in (out / "cases.jsonl").read_text().splitlines():
        case = json.loads(line)
        header_name = rename.get(case["model"], Path(case["model"]).stem + ".header.gguf")
        header_path = DEST / header_name
        if not header_path.exists():
            head = read_gguf(models / case["model"])
            with open(models / case["model"], "rb") as fh:
                header_path.write_bytes(fh.read(head.data_start))
        shutil.copyfile(out / case["log"], DEST / case["log"])
        entries[case["log"]] = {**case, "model": header_name}
    manifest["fixtures"] = list(entries.values())
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
