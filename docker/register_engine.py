"""Register the image's llama.cpp build in the data directory (run by the entrypoint at each start).

The image carries one engine, built at image build time by ``llamastudio engines build`` into
``/opt/llamastudio/engines/<id>/`` and exported by ``engines list --json`` to
``/opt/llamastudio/engine.json``. The data directory is a volume, so the registration is made
here, through the studio's own engine registry, keeping the build's record (kind ``source``,
version, backend, build options): ``llamastudio engines list`` shows it like any build.

- Registered if missing; the default llama.cpp engine when there is none, when the default's
  binary is gone, or when the default is another image's build (an upgraded image takes over).
- Records of earlier images' builds whose files are gone (the image was replaced) are removed;
  models pinned to them fall back to the default. Engines the user built or added are untouched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llamastudio.config import Settings
from llamastudio.engines.registry import LLAMA_CPP, Engine
from llamastudio.services import local

IMAGE_ENGINES = Path("/opt/llamastudio/engines")
EXPORT = Path("/opt/llamastudio/engine.json")


def _from_image(engine: Engine) -> bool:
    return Path(engine.root).is_relative_to(IMAGE_ENGINES)


def _present(engine: Engine) -> bool:
    return engine.server.is_file()


def main() -> int:
    exported = [e for e in json.loads(EXPORT.read_text()) if e.get("family", LLAMA_CPP) == LLAMA_CPP]
    if len(exported) != 1:
        sys.stderr.write(f"register_engine: {EXPORT} holds {len(exported)} llama.cpp engines, expected 1\n")
        return 1
    settings = Settings()
    settings.ensure_dirs()
    registry = local.engines(settings)
    image = Engine(**{**exported[0], "is_default": False})
    known = {e.id: e for e in registry.all()}
    for engine in known.values():
        if engine.id != image.id and _from_image(engine) and not _present(engine):
            registry.remove(engine.id)
            sys.stderr.write(f"register_engine: removed {engine.id} (an earlier image's build, gone)\n")
    if image.id not in known:
        registry.add(image)
        sys.stderr.write(f"register_engine: registered {image.id} ({image.server})\n")
    default = registry.default(LLAMA_CPP)
    if default is None or (default.id != image.id and (not _present(default) or _from_image(default))):
        registry.set_default(image.id)
        sys.stderr.write(f"register_engine: {image.id} is the default llama.cpp engine\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
