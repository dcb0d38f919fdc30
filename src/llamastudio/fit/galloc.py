"""ggml-alloc's graph allocator, replayed on a graph's shapes: the size of a compute buffer.

A port of ``ggml_gallocr_alloc_graph_impl`` and ``ggml_dyn_tallocr`` (``ggml/src/ggml-alloc.c``
of the pinned llama.cpp), for one buffer of one backend:

- inputs (leafs the graph reads) are placed first and stay until their last reader has run;
- nodes are placed in graph order; a node whose op can work in place takes over its parent's
  memory when it is that parent's last reader, the parent is not a view or an output, and both
  have the same layout;
- a tensor is freed after its last reader (a view's memory after the last reader of any view
  of it); graph outputs are never freed;
- free space is a list of blocks; a tensor goes in the smallest free block that fits, else at
  the end of the buffer, which grows. The buffer's size is the highest end ever reached.
"""

from __future__ import annotations

from llamastudio.fit.ggml import INPLACE, Graph, Tensor

ALIGNMENT = 32  # TENSOR_ALIGNMENT of the CPU buffer type


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


class _Blocks:
    """ggml_dyn_tallocr with one chunk: free blocks sorted by offset, the last one unbounded."""

    def __init__(self) -> None:
        self.free: list[list[int]] = [[0, 1 << 62]]
        self.max_size = 0

    def alloc(self, size: int) -> int:
        size = _align(size)
        best, best_size = -1, 1 << 63
        for i, (_, bsize) in enumerate(self.free[:-1]):
            if size <= bsize <= best_size:
                best, best_size = i, bsize
        if best == -1:
            best = len(self.free) - 1
        block = self.free[best]
        offset = block[0]
        block[0] += size
        block[1] -= size
        if block[1] == 0:
            del self.free[best]
        self.max_size = max(self.max_size, offset + size)
        return offset

    def release(self, offset: int, size: int) -> None:
        size = _align(size)
        for i, block in enumerate(self.free):
            if block[0] + block[1] == offset:
                block[1] += size
                if i + 1 < len(self.free) and block[0] + block[1] == self.free[i + 1][0]:
                    block[1] += self.free[i + 1][1]
                    del self.free[i + 1]
                return
            if offset + size == block[0]:
                block[0] = offset
                block[1] += size
                if i > 0 and self.free[i - 1][0] + self.free[i - 1][1] == block[0]:
                    self.free[i - 1][1] += block[1]
                    del self.free[i]
                return
        pos = next((i for i, b in enumerate(self.free) if b[0] >= offset), len(self.free))
        self.free.insert(pos, [offset, size])


class _State:
    __slots__ = ("allocated", "children", "offset", "views")

    def __init__(self) -> None:
        self.children = 0
        self.views = 0
        self.allocated = False
        self.offset = 0


def buffer_size(
    graph: Graph, nodes: list[Tensor] | None = None, foreign: frozenset[int] = frozenset()
) -> int:
    """Bytes of the compute buffer ggml-alloc reserves for ``graph``; or, for one backend of a
    split graph, for its ``nodes`` alone, the tensors whose ids are in ``foreign`` (other
    backends' results and the graph inputs, copied in ahead: ``pipeline.py``) placed elsewhere."""
    blocks = _Blocks()
    leafs = graph.leafs if nodes is None else []
    nodes = graph.nodes if nodes is None else nodes
    state: dict[int, _State] = {}

    def st(t: Tensor) -> _State:
        s = state.get(id(t))
        if s is None:
            s = state[id(t)] = _State()
        return s

    def place(t: Tensor) -> None:
        s = st(t)
        if t.external or t.view_src is not None or s.allocated or id(t) in foreign:
            return
        s.allocated = True
        if t.op in INPLACE:
            for parent in t.src:
                if parent is None or parent.output:
                    continue
                p = st(parent)
                if not p.allocated or not t.same_layout(parent):
                    continue
                if p.children == 1 and p.views == 0:
                    s.offset = p.offset
                    p.allocated = False
                    return
        s.offset = blocks.alloc(t.nbytes)

    def release(t: Tensor) -> None:
        if t.output:
            return
        s = st(t)
        blocks.release(s.offset, t.nbytes)
        s.allocated = False

    for leaf in leafs:
        place(leaf)
    for node in nodes:
        if node.view_src is not None and node.op != "NONE":
            st(node.view_src).views += 1
        for src in node.src:
            if src is not None:
                st(src).children += 1
    for node in nodes:
        for parent in node.src:
            if parent is not None:
                place(parent)
        place(node)
        for parent in node.src:
            if parent is None:
                continue
            p = st(parent)
            p.children -= 1
            if p.children or p.views:
                continue
            if parent.view_src is not None:
                root = st(parent.view_src)
                root.views -= 1
                if root.views == 0 and root.children == 0 and root.allocated:
                    release(parent.view_src)
            elif p.allocated:
                release(parent)
    return blocks.max_size
