"""llama.cpp Studio: a self-hosted control plane for local models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llamastudio")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
