"""Reading GGUF headers, metadata and tensor tables (local, split, or over HTTP ranges)."""

from llamastudio.gguf.facts import ModelFacts, facts_from_model
from llamastudio.gguf.model import GGUFModel, load_model, split_names
from llamastudio.gguf.reader import GGUFHeader, TensorInfo, read_header

__all__ = [
    "GGUFHeader",
    "GGUFModel",
    "ModelFacts",
    "TensorInfo",
    "facts_from_model",
    "load_model",
    "read_header",
    "split_names",
]
