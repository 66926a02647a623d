"""A tiny client for the demo: GET a URL N times, one fresh connection (and name lookup) each.

    python3 /app/fetch.py http://web:8000/ 10

Prints each answer's JSON on its own line, then a summary line ``{"instances": {NAME: COUNT}}``.
Exits 1 when no request succeeded. Standard library only, so it runs in the app's image.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections import Counter


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    url, count = argv[0], int(argv[1]) if len(argv) > 1 else 10
    seen: Counter[str] = Counter()
    for _ in range(count):
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        except (OSError, ValueError) as exc:
            body = {"error": f"{url}: {exc}"}
        print(json.dumps(body), flush=True)
        if "hits" in body:
            seen[body["instance"]] += 1
    print(json.dumps({"instances": dict(seen)}), flush=True)
    return 0 if seen else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
