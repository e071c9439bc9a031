"""Write the shipped JSON Schema of plans: ``python -m engine.plan.schema_gen [--check]``.

``engine/plan/plan.schema.json`` is ``Plan.model_json_schema()`` as sorted, indented JSON.
Regenerate it after changing a plan or action model; ``--check`` exits 1 when it is stale.

>>> schema_text().startswith('{')
True
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.io import atomic_write_text

SCHEMA_PATH = Path(__file__).with_name("plan.schema.json")


def schema_text() -> str:
    from engine.plan.plan import Plan

    return json.dumps(Plan.model_json_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = schema_text()
    if "--check" in args:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.is_file() else ""
        if current != text:
            print(f"{SCHEMA_PATH} is stale; run: python -m engine.plan.schema_gen")
            return 1
        print(f"{SCHEMA_PATH} is up to date")
        return 0
    atomic_write_text(SCHEMA_PATH, text)
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
