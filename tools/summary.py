"""Print where to look after `make workshop`."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helpers.local import stack  # noqa: E402


def main() -> int:
    """Summarise the stack, the executed notebooks and the book."""
    print("\nThe workshop is ready.\n")
    print("Local stack (stop it with `make down`):")
    for s in stack.status():
        print(f"  {s.name:17} {s.state:9} {s.url}")
    executed = sorted((ROOT / "build" / "executed").glob("*.ipynb"))
    print(f"\nExecuted notebooks ({len(executed)}): build/executed/")
    print("Book: build/book/_build/html/index.html")
    print("Step through the notebooks yourself: make lab\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
