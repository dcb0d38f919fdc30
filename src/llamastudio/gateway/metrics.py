"""Prometheus metrics of the gateway, kept in plain dicts (one event loop, no locks) and rendered
in the text exposition format.

Label values are bounded: ``model`` is a configured model's name (a name the client made up is
counted as ``_unknown``) and ``path`` one of the routes llama-server serves (else ``_other``), so
a client sending random names cannot grow the series without bound.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

from llamastudio.events import EventBus
from llamastudio.gateway import activity

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
UNKNOWN = "_unknown"  # the model label of requests naming no configured model
OTHER = "_other"  # the path label of routes not listed below
PATHS = frozenset(
    {
        *(
            p
            for base in (
                "/chat/completions",
                "/completions",
                "/embeddings",
                "/responses",
                "/rerank",
                "/reranking",
                "/audio/transcriptions",
                "/models",
                "/health",
                "/chat/completions/input_tokens",
                "/responses/input_tokens",
            )
            for p in (base, "/v1" + base)
        ),
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/completion",
        "/embedding",
        "/infill",
        "/tokenize",
        "/detokenize",
        "/apply-template",
        "/props",
        "/slots",
        "/metrics",
        "/lora-adapters",
    }
)


def path_label(path: str) -> str:
    """The ``path`` label: a known route, ``/slots/{id}``, or ``_other``."""
    if path in PATHS:
        return path
    return "/slots/{id}" if path.startswith("/slots/") else OTHER


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value
        self.n += 1


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True)
class Series:
    """A metric with several labels (``values``: one entry per label set, e.g.
    ``(("model", "m"), ("device", "CPU"))``), for numbers the gateway does not count itself."""

    name: str
    kind: str  # gauge | counter
    help: str
    values: dict[tuple[tuple[str, str], ...], float]


def drift_series(drift: dict[str, dict[str, float]], drifts: dict[str, int]) -> tuple[Series, ...]:
    """The estimate's drift from measured memory (``runtime/measured.py``) as two series."""
    return (
        Series(
            "llamastudio_estimate_drift_ratio",
            "gauge",
            "(estimated - measured) / measured memory of a model's load, per device (< 0: under).",
            {(("model", m), ("device", d)): r for m, per in drift.items() for d, r in per.items()},
        ),
        Series(
            "llamastudio_estimate_drift_total",
            "counter",
            "Loads whose measured memory was more than 5 % off the estimate, since start.",
            {(("model", m),): float(n) for m, n in drifts.items()},
        ),
    )


class Metrics:
    def __init__(self, bus: EventBus | None = None) -> None:
        """``bus``: where the recent requests' events go (the studio's event bus)."""
        self.activity = activity.Activity(bus)  # recent requests, for the UI (activity.py)
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)  # model, path, status
        self.latency: dict[str, Histogram] = defaultdict(Histogram)
        self.ttfb: dict[str, Histogram] = defaultdict(Histogram)
        self.tokens: dict[str, int] = defaultdict(int)
        self.prompt_tokens: dict[str, int] = defaultdict(int)
        self.tokens_per_second: dict[str, float] = {}
        self.draft_tokens: dict[str, int] = defaultdict(int)  # speculative decoding: drafted
        self.draft_accepted: dict[str, int] = defaultdict(int)  # ... and accepted by the model
        self.upstream_errors: dict[str, int] = defaultdict(int)
        self.disconnects: dict[str, int] = defaultdict(int)

    def timings(self, model: str, chunk: bytes) -> None:
        """llama-server's ``timings`` (last chunk of a stream, or the body): tokens and tokens/s."""
        found = activity.timing_fields(chunk)
        activity.timings(found)  # the current request's own figures, for the activity panel
        if "predicted_n" in found:
            self.tokens[model] += int(found["predicted_n"])
        if "prompt_n" in found:
            self.prompt_tokens[model] += int(found["prompt_n"])
        if "draft_n" in found:
            self.draft_tokens[model] += int(found["draft_n"])
            if "draft_n_accepted" in found:
                self.draft_accepted[model] += int(found["draft_n_accepted"])
        if "predicted_per_second" in found:
            self.tokens_per_second[model] = found["predicted_per_second"]

    def render(
        self,
        gauges: dict[str, dict[str, float]],
        counters: dict[str, float],
        series: tuple[Series, ...] = (),
    ) -> str:
        out: list[str] = []

        def head(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")

        head("llamastudio_requests_total", "counter", "Gateway requests by model, path and status.")
        for (model, path, status), n in sorted(self.requests.items()):
            out.append(
                f'llamastudio_requests_total{{model="{_label(model)}",path="{_label(path)}",'
                f'status="{status}"}} {n}'
            )
        for name, hists, help_ in (
            ("llamastudio_request_seconds", self.latency, "Request latency (until the last byte)."),
            ("llamastudio_first_byte_seconds", self.ttfb, "Time to the first response byte."),
        ):
            head(name, "histogram", help_)
            for model, h in sorted(hists.items()):
                lbl = f'model="{_label(model)}"'
                cum = 0
                for bound, c in zip((*BUCKETS, float("inf")), h.counts, strict=True):
                    cum += c
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    out.append(f'{name}_bucket{{{lbl},le="{le}"}} {cum}')
                out.append(f"{name}_sum{{{lbl}}} {h.total:.6f}")
                out.append(f"{name}_count{{{lbl}}} {h.n}")
        for name, values, kind, help_ in (
            ("llamastudio_generated_tokens_total", self.tokens, "counter", "Tokens generated (upstream)."),
            ("llamastudio_prompt_tokens_total", self.prompt_tokens, "counter", "Prompt tokens processed."),
            (
                "llamastudio_upstream_tokens_per_second",
                self.tokens_per_second,
                "gauge",
                "Generation speed of the last request, from llama-server's timings.",
            ),
            (
                "llamastudio_draft_tokens_total",
                self.draft_tokens,
                "counter",
                "Speculative decoding: tokens the draft model proposed.",
            ),
            (
                "llamastudio_draft_accepted_tokens_total",
                self.draft_accepted,
                "counter",
                "Speculative decoding: drafted tokens the model accepted.",
            ),
            (
                "llamastudio_draft_acceptance_ratio",
                {m: self.draft_accepted[m] / n for m, n in self.draft_tokens.items() if n},
                "gauge",
                "Speculative decoding: accepted / drafted tokens since start.",
            ),
            ("llamastudio_upstream_errors_total", self.upstream_errors, "counter", "Upstream failures."),
            (
                "llamastudio_client_disconnects_total",
                self.disconnects,
                "counter",
                "Clients gone mid-request.",
            ),
        ):
            head(name, kind, help_)
            for model, v in sorted(values.items()):
                out.append(f'{name}{{model="{_label(model)}"}} {v:g}')
        for name, per_model in gauges.items():
            head(name, "gauge", name.removeprefix("llamastudio_").replace("_", " ") + ".")
            for model, v in sorted(per_model.items()):
                out.append(f'{name}{{model="{_label(model)}"}} {v:g}')
        for name, v in counters.items():
            head(name, "counter", name.removeprefix("llamastudio_").replace("_", " ") + ".")
            out.append(f"{name} {v:g}")
        for s in series:
            head(s.name, s.kind, s.help)
            for labels, v in sorted(s.values.items()):
                text = ",".join(f'{k}="{_label(val)}"' for k, val in labels)
                out.append(f"{s.name}{{{text}}} {v:g}")
        return "\n".join(out) + "\n"
