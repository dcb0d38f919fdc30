"""Compute buffers under llama.cpp's pipeline parallelism: one buffer per backend of a split graph.

When it is on (``llama_context``'s constructor, pinned source): more than one model device,
every layer and the output offloaded (``n_gpu_layers > n_layer``), ``-sm layer``, the KV cache
offloaded (no ``-nkvo``), no tensor overrides (``-ot``, ``--cpu-moe``), and every non-CPU device
supporting async compute and events (CUDA, ROCm, Vulkan, SYCL, Metal and RPC devices do), the
scheduler is created with ``n_copies = GGML_SCHED_MAX_COPIES`` (4; the log says "pipeline
parallelism enabled" and "sched copies = 4"). Then ``ggml_backend_sched_split_graph``:

- assigns each node a backend: a layer's nodes run on the device holding that layer (its
  weights, its KV cache; the layer's first norm is pinned there); after the last layer, nodes
  without weights stay on the last layer's device (gpt-oss gathers its output rows there) and
  from the output norm's scale on, the output layer's device; before the first layer, the
  ``get_rows`` of the token embeddings (a CPU weight) runs on the CPU and the rest (the
  mixed-batch path) on the first layer's device;
  graph inputs (tokens, positions, KV row indices, masks, output ids) belong to the CPU;
- gives every graph input 4 copies in the CPU's compute buffer, and every tensor a split reads
  from another backend (the hidden state passed between devices, the inputs each device reads)
  4 copies in that split's backend buffer; all copies are allocated ahead of the nodes and never
  freed (flagged input and output);
- allocates each backend's own nodes with ggml-alloc in its own buffer (``galloc.py``).

So a device's compute buffer is 4 × (the tensors it reads from elsewhere) + the peak of its own
nodes; the host's is 4 × (all graph inputs) + the embedding rows it gathers. Measured on the
real llama-server over two rpc-servers (tests/test_rpc.py): exact to the log's 0.01 MiB.
"""

from __future__ import annotations

import bisect

from llamastudio.fit.galloc import ALIGNMENT, buffer_size
from llamastudio.fit.ggml import Graph, Tensor
from llamastudio.hardware import Gpu

HOST = "CPU"
N_COPIES = 4  # GGML_SCHED_MAX_COPIES
# devices without async compute + events: none of the studio's backends in their default builds
# (CUDA, ROCm, SYCL, Vulkan, Metal and RPC report both; a CUDA build with GGML_CUDA_NO_PEER_COPY
# does not, and is not told apart here)
NO_EVENTS: frozenset[str] = frozenset()


def pipeline_parallel(
    gpus: tuple[Gpu, ...], placement: list[str], split_mode: str, kv_offload: bool, overrides: bool
) -> bool:
    """llama_context: whether the scheduler keeps 4 copies of each split's inputs."""
    return (
        len(gpus) > 1
        and all(dev != HOST for dev in placement)  # n_gpu_layers > n_layer: the output too
        and split_mode == "layer"
        and kv_offload
        and not overrides
        and not any(g.backend in NO_EVENTS for g in gpus)
    )


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def split_buffers(graph: Graph, placement: list[str], n_copies: int = N_COPIES) -> dict[str, int]:
    """Bytes of each backend's compute buffer for ``graph`` split by layer over ``placement``
    (the device of each layer, then of the output)."""
    starts = graph.layer_starts
    first, n_layer = placement[0], len(placement) - 1
    where: dict[int, str] = {}
    nodes: dict[str, list[Tensor]] = {}
    weighed = False  # the output part has reached a node reading a weight
    for node in graph.nodes:
        il = bisect.bisect_right(starts, node.seq) - 1
        if il < 0:  # before the first layer: the token rows are gathered where the table is
            gather = node.op == "GET_ROWS" and node.src and node.src[0] is not None and node.src[0].external
            dev = HOST if gather else first
        elif il < n_layer:
            dev = placement[il]  # a layer's first norm is pinned to its device, the rest follows
        else:  # the output part: weightless nodes stay on the last layer's device until the
            # first one reading a weight (the output norm's scale) moves to the output's device
            weighed = weighed or any(s is not None and s.external for s in node.src)
            dev = placement[n_layer] if weighed else placement[max(n_layer - 1, 0)]
        where[id(node)] = dev
        nodes.setdefault(dev, []).append(node)

    def device(t: Tensor) -> str | None:
        """Where a source lives; None for weights, caches and views of them (never copied)."""
        root = t.view_src or t
        if root.external:
            return None
        return where.get(id(root), HOST)  # not a node: a graph input

    copies: dict[str, dict[int, int]] = {}
    for node in graph.nodes:
        dev = where[id(node)]
        for src in node.src:
            if src is None:
                continue
            at = device(src)
            if at is not None and at != dev:
                copies.setdefault(dev, {})[id(src)] = src.nbytes
    inputs = {id(t): t.nbytes for t in graph.leafs if t.input and not t.external}
    copies.setdefault(HOST, {}).update(inputs)
    out: dict[str, int] = {}
    for dev in set(nodes) | {HOST}:
        ahead = copies.get(dev, {})
        foreign = frozenset(ahead) | frozenset(inputs)
        own = buffer_size(graph, nodes.get(dev, []), foreign) if dev in nodes else 0
        out[dev] = n_copies * sum(_align(n) for n in ahead.values()) + own
    return out
