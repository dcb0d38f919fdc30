"""The image's HEALTHCHECK: healthy once the studio's gateway answers ``/health``.

The address comes from ``<data>/run/studio.json``, which ``serve`` writes once both listeners are
up (so ``PORT`` / ``LLAMASTUDIO_GATEWAY_PORT`` are followed); ``/health`` needs no key. Exit 0 when
healthy, 1 otherwise (with the reason on stderr, shown by ``docker inspect``).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path


def main() -> int:
    info = Path(os.environ.get("LLAMASTUDIO_DATA_DIR", "/app/data")) / "run" / "studio.json"
    try:
        url = json.loads(info.read_text())["gateway_url"].rstrip("/") + "/health"
    except (OSError, ValueError, KeyError) as exc:
        sys.stderr.write(f"not serving yet ({info}: {exc})\n")
        return 1
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            if resp.status == 200:
                return 0
            sys.stderr.write(f"{url}: HTTP {resp.status}\n")
    except OSError as exc:
        sys.stderr.write(f"{url}: {exc}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
