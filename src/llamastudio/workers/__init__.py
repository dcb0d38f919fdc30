"""llama.cpp RPC workers: ``llamastudio worker`` runs and supervises ``ggml-rpc-server`` on a
helper host with a small authenticated status endpoint beside it (``worker.py``, ``status.py``);
the studio registers workers, health-checks them and plans a model across them (``registry.py``,
``plan.py``)."""
