"""The test rig: the real llama-server build, tiny real GGUF models, and a server fixture."""
