"""The shapes of ggml's graph: tensors, the ops llama.cpp's model graphs use, and graph order.

Only what decides a compute buffer is kept: each tensor's type, shape and strides, the op that
makes it (ggml-alloc may reuse a parent's memory in place for some ops), its sources, whether it
is a view of another tensor, and whether it is an input, an output, or lives outside the compute
buffer (weights, KV cache, recurrent state). Each function mirrors the ggml function of the same
name in ``ggml/src/ggml.c`` of the pinned llama.cpp: the result's shape and type, and its sources
in the same order (graph order and in-place reuse depend on it). No data is computed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import gguf

# ggml_op_can_inplace (ggml-alloc.c): ops whose result may take its parent's memory
INPLACE = frozenset(
    {
        "FILL",
        "SCALE",
        "DIAG_MASK_ZERO",
        "DIAG_MASK_INF",
        "ADD",
        "ADD_ID",
        "ADD1",
        "SUB",
        "MUL",
        "DIV",
        "SQR",
        "SQRT",
        "LOG",
        "UNARY",
        "ROPE",
        "ROPE_BACK",
        "SILU_BACK",
        "RMS_NORM",
        "RMS_NORM_BACK",
        "CLAMP",
        "SOFT_MAX",
        "SOFT_MAX_BACK",
    }
)
# every tensor's creation number: a graph records where each layer's tensors begin
# (Graph.layer_starts), which tells the device of each node under a layer split (compute.py)
SERIAL = itertools.count()
_PLAIN = {"f32": (1, 4), "f16": (1, 2), "bf16": (1, 2), "i32": (1, 4), "i64": (1, 8), "i8": (1, 1)}


def type_traits(type_name: str) -> tuple[int, int]:
    """(block size, bytes per block) of a ggml type."""
    if type_name in _PLAIN:
        return _PLAIN[type_name]
    return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name.upper()]]


def row_size(type_name: str, n: int) -> int:
    block, size = type_traits(type_name)
    return n // block * size


class Tensor:
    __slots__ = ("external", "input", "name", "nb", "ne", "op", "output", "seq", "src", "type", "view_src")
    view_src: Tensor | None
    external: bool

    def __init__(
        self,
        type_name: str,
        ne: Iterable[int],
        op: str = "NONE",
        src: Iterable[Tensor | None] = (),
        view_src: Tensor | None = None,
        nb: Iterable[int] | None = None,
        name: str = "",
    ) -> None:
        self.type = type_name
        self.ne = (*ne, 1, 1, 1, 1)[:4]
        self.op = op
        self.src = tuple(src)
        # a view's memory belongs to the tensor it views (the root: ggml collapses view chains)
        self.view_src = (view_src.view_src or view_src) if view_src is not None else None
        self.external = view_src.external if view_src is not None else False
        self.input = False
        self.output = False
        self.name = name
        self.seq = next(SERIAL)
        if nb is None:
            block, size = type_traits(type_name)
            strides = [size, size * (self.ne[0] // block)]
            strides += [strides[1] * self.ne[1], strides[1] * self.ne[1] * self.ne[2]]
            self.nb = tuple(strides)
        else:
            self.nb = (*nb,)

    @property
    def nbytes(self) -> int:
        """ggml_nbytes."""
        if any(n <= 0 for n in self.ne):
            return 0
        block = type_traits(self.type)[0]
        total = self.ne[0] * self.nb[0] // block
        return total + sum((self.ne[i] - 1) * self.nb[i] for i in range(1, 4))

    @property
    def n_elements(self) -> int:
        return self.ne[0] * self.ne[1] * self.ne[2] * self.ne[3]

    def same_layout(self, other: Tensor) -> bool:
        return self.type == other.type and self.ne == other.ne and self.nb == other.nb

    def __repr__(self) -> str:
        return f"{self.op}({self.name or '?'} {self.type}{list(self.ne)})"


def weight(type_name: str, *ne: int, name: str = "") -> Tensor:
    """A tensor held outside the compute buffer (model weights, KV cache, recurrent state)."""
    t = Tensor(type_name, ne, name=name)
    t.external = True
    return t


def new_input(type_name: str, *ne: int, name: str = "") -> Tensor:
    t = Tensor(type_name, ne, name=name)
    t.input = True
    return t


def _dup(a: Tensor, op: str, *src: Tensor | None) -> Tensor:
    return Tensor(a.type, a.ne, op, src)


def view(a: Tensor, ne: Iterable[int], nb: Iterable[int] | None = None, op: str = "VIEW") -> Tensor:
    return Tensor(a.type, ne, op, (a,), view_src=a, nb=nb)


def view_tensor(a: Tensor, op: str = "VIEW") -> Tensor:
    return view(a, a.ne, a.nb, op)


def view_1d(a: Tensor, ne0: int) -> Tensor:
    return view(a, (ne0,))


def view_2d(a: Tensor, ne0: int, ne1: int, nb1: int) -> Tensor:
    return view(a, (ne0, ne1), (a.nb[0], nb1, nb1 * ne1, nb1 * ne1))


def view_3d(a: Tensor, ne0: int, ne1: int, ne2: int, nb1: int, nb2: int) -> Tensor:
    return view(a, (ne0, ne1, ne2), (a.nb[0], nb1, nb2, nb2 * ne2))


def view_4d(a: Tensor, ne: tuple[int, int, int, int], nb1: int, nb2: int, nb3: int) -> Tensor:
    return view(a, ne, (a.nb[0], nb1, nb2, nb3))


def reshape(a: Tensor, *ne: int) -> Tensor:
    return view(a, ne, op="RESHAPE")


def permute(a: Tensor, *axes: int) -> Tensor:
    ne, nb = [0] * 4, [0] * 4
    for i, ax in enumerate(axes):
        ne[ax], nb[ax] = a.ne[i], a.nb[i]
    return view(a, ne, nb, op="PERMUTE")


def transpose(a: Tensor) -> Tensor:
    return view(a, (a.ne[1], a.ne[0], a.ne[2], a.ne[3]), (a.nb[1], a.nb[0], a.nb[2], a.nb[3]), "TRANSPOSE")


def is_contiguous(a: Tensor) -> bool:
    return a.nb == Tensor(a.type, a.ne).nb


def cont(a: Tensor, *ne: int) -> Tensor:
    return Tensor(a.type, ne or a.ne, "CONT", (a,))


def dup(a: Tensor) -> Tensor:
    return _dup(a, "DUP", a)


def cpy(a: Tensor, b: Tensor) -> Tensor:
    return Tensor(b.type, b.ne, "CPY", (a, b), view_src=b, nb=b.nb)


def set_rows(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    return Tensor(a.type, a.ne, "SET_ROWS", (b, c, a), view_src=a, nb=a.nb)


def cast(a: Tensor, type_name: str) -> Tensor:
    """ggml_cast: a CPY whose second source is the result itself."""
    t = Tensor(type_name, a.ne, "CPY", (a,))
    t.src = (a, t)
    return t


def get_rows(a: Tensor, b: Tensor) -> Tensor:
    return Tensor(
        "i32" if a.type == "i32" else "f32", (a.ne[0], b.ne[0], b.ne[1], b.ne[2]), "GET_ROWS", (a, b)
    )


def mul_mat(a: Tensor, b: Tensor) -> Tensor:
    return Tensor("f32", (a.ne[1], b.ne[1], b.ne[2], b.ne[3]), "MUL_MAT", (a, b))


def mul_mat_id(a: Tensor, b: Tensor, ids: Tensor) -> Tensor:
    return Tensor("f32", (a.ne[1], ids.ne[0], b.ne[2], 1), "MUL_MAT_ID", (a, b, ids))


def add(a: Tensor, b: Tensor) -> Tensor:
    return _dup(a, "ADD", a, b)


def add_id(a: Tensor, b: Tensor, ids: Tensor) -> Tensor:
    return _dup(a, "ADD_ID", a, b, ids)


def mul(a: Tensor, b: Tensor) -> Tensor:
    return _dup(a, "MUL", a, b)


def div(a: Tensor, b: Tensor) -> Tensor:
    return _dup(a, "DIV", a, b)


def scale(a: Tensor) -> Tensor:
    return _dup(a, "SCALE", a)


def scale_inplace(a: Tensor) -> Tensor:
    return view_tensor(a, "SCALE")


def clamp(a: Tensor) -> Tensor:
    return _dup(a, "CLAMP", a)


def unary(a: Tensor) -> Tensor:
    """silu, gelu, sigmoid, tanh, relu, exp, softplus, ..."""
    return _dup(a, "UNARY", a)


def rms_norm(a: Tensor) -> Tensor:
    return _dup(a, "RMS_NORM", a)


def norm(a: Tensor) -> Tensor:
    return _dup(a, "NORM", a)


def rope(a: Tensor, pos: Tensor, factors: Tensor | None = None) -> Tensor:
    return _dup(a, "ROPE", a, pos, factors)


def soft_max(a: Tensor, mask: Tensor | None = None, sinks: Tensor | None = None) -> Tensor:
    return _dup(a, "SOFT_MAX", a, mask, sinks)


def glu_split(a: Tensor, b: Tensor) -> Tensor:
    """swiglu_split, geglu_split, reglu_split (not in place)."""
    return Tensor(a.type, a.ne, "GLU", (a, b))


def concat(a: Tensor, b: Tensor, dim: int) -> Tensor:
    ne = [a.ne[d] + b.ne[d] if d == dim else a.ne[d] for d in range(4)]
    return Tensor(a.type, ne, "CONCAT", (a, b))


def pad(a: Tensor, p0: int) -> Tensor:
    return Tensor(a.type, (a.ne[0] + p0, *a.ne[1:]), "PAD", (a,))


def argsort_top_k(a: Tensor, k: int) -> Tensor:
    s = Tensor("i32", a.ne, "ARGSORT", (a,))
    return view_4d(s, (k, s.ne[1], s.ne[2], s.ne[3]), s.nb[1], s.nb[2], s.nb[3])


def sum_rows(a: Tensor) -> Tensor:
    return Tensor(a.type, (1, *a.ne[1:]), "SUM_ROWS", (a,))


def flash_attn_ext(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, sinks: Tensor | None) -> Tensor:
    return Tensor("f32", (v.ne[0], q.ne[2], q.ne[1], q.ne[3]), "FLASH_ATTN_EXT", (q, k, v, mask, sinks))


def ssm_conv(sx: Tensor, c: Tensor) -> Tensor:
    n_t = sx.ne[0] - c.ne[0] + 1
    return Tensor("f32", (c.ne[1], n_t, sx.ne[2]), "SSM_CONV", (sx, c))


def ssm_scan(s: Tensor, x: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, ids: Tensor) -> Tensor:
    n = x.n_elements + s.ne[0] * s.ne[1] * s.ne[2] * ids.ne[0]
    return Tensor("f32", (n,), "SSM_SCAN", (s, x, dt, a, b, c, ids))


class Graph:
    """ggml_cgraph's node order: ggml_build_forward_expand visits sources depth first, left to
    right, and appends each tensor once, after its sources; tensors without an op are leafs."""

    def __init__(self) -> None:
        self.nodes: list[Tensor] = []
        self.leafs: list[Tensor] = []
        self._seen: set[int] = set()
        # creation number of the first tensor of each layer, then of the output part
        self.layer_starts: list[int] = []

    def expand(self, root: Tensor) -> None:
        stack: list[tuple[Tensor, int]] = [(root, 0)]
        while stack:
            t, i = stack.pop()
            if i == 0:
                if id(t) in self._seen:
                    continue
                self._seen.add(id(t))
            if i < len(t.src):
                stack.append((t, i + 1))
                s = t.src[i]
                if s is not None and id(s) not in self._seen:
                    stack.append((s, 0))
                continue
            (self.leafs if t.op == "NONE" else self.nodes).append(t)
