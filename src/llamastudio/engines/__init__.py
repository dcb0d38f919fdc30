"""llama.cpp builds (source, release, external) side by side, their capabilities and validation."""
