"""*What* runs: model configurations and their repository, the name index, import/export
(llama-swap, presets) and launch specs. Nothing here starts a process (that is ``runtime/``)."""
