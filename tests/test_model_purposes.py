"""Every kind of model a user runs, end to end through the gateway on the real llama-server:
a vision pair (its projector found and passed as --mmproj, images in), embedding and reranking
models (started with the flags they need, routed by path), a draft model (speculative decoding
really on: /metrics counts accepted tokens), a base model without a chat template (marked), and
the requests each cannot answer refused with one clear error while its neighbours keep working.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import anthropic
import gguf
import openai
import pytest

from llamastudio.fit.argv import parse_server_args
from llamastudio.fit.buffers import LoggedBuffers, parse_log
from llamastudio.fit.companions import Companions
from llamastudio.fit.estimator import estimate
from llamastudio.fit.flags import GPU_LAYERS_ALL
from llamastudio.fit.planner import plan
from llamastudio.gguf import facts_from_model, load_model
from llamastudio.gguf.roles import draft_mismatch, projector_mismatch
from llamastudio.hardware.profiles import parse_profile
from tests.rig import embed, vision
from tests.rig.factory import BUILDERS, Vocab
from tests.rig.serving import running
from tests.rig.studio import Studio

ARGS = ["-c", "1024", "-np", "1", "-t", "2"]
PNG = "data:image/png;base64," + base64.b64encode(vision.png_bytes()).decode()


def _strip_template(src: Path, dst: Path) -> None:
    """A copy of a GGUF without ``tokenizer.chat_template``: a base model."""
    reader = gguf.GGUFReader(src)
    arch = str(bytes(reader.fields["general.architecture"].parts[-1]), "utf-8")
    w = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in (
            "general.architecture",
            "tokenizer.chat_template",
        ):
            continue
        value = field.contents()
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(field.name, value, vtype, sub_type=sub)
    for t in reader.tensors:
        w.add_tensor(
            t.name, t.data, raw_shape=list(reversed([int(x) for x in t.shape])), raw_dtype=t.tensor_type
        )
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, vocab: Vocab) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("purposes")
    out: dict[str, Path] = {}
    out["vision"], out["mmproj"] = vision.write_vision_pair(root / "vision", vocab)
    (root / "other").mkdir()
    out["mismatched"] = vision.write_mismatched_mmproj(root / "other" / "mmproj-other.gguf")
    out["embed"] = root / "bge.gguf"
    embed.write_embedding(out["embed"])
    out["rerank"] = root / "reranker.gguf"
    embed.write_reranker(out["rerank"])
    out["qwen3-rerank"] = root / "qwen3-reranker.gguf"
    embed.write_qwen3_reranker(out["qwen3-rerank"], vocab)
    out["main"], out["draft"] = embed.write_draft_pair(root / "spec", vocab)
    BUILDERS["qwen3"](root / "chat.gguf", vocab)
    out["chat"] = root / "chat.gguf"
    out["base"] = root / "base.gguf"
    _strip_template(out["chat"], out["base"])
    return out


# -- what a file is for, from its header ----------------------------------------------------------
def test_each_file_says_what_it_is_for(models: dict[str, Path]) -> None:
    facts = {name: facts_from_model(load_model(str(p))) for name, p in models.items()}
    assert {n: f.role for n, f in facts.items()} == {
        "vision": "chat",
        "mmproj": "mmproj",
        "mismatched": "mmproj",
        "embed": "embedding",
        "rerank": "rerank",
        "qwen3-rerank": "rerank",
        "main": "chat",
        "draft": "chat",
        "chat": "chat",
        "base": "chat",
    }
    assert facts["embed"].pooling == "mean" and facts["rerank"].pooling == "rank"
    assert facts["chat"].chat_template and facts["chat"].template_family == "chatml"
    assert not facts["base"].chat_template and facts["base"].template_family is None
    assert not facts["embed"].chat_template


def test_companions_are_checked_as_llama_cpp_does(models: dict[str, Path]) -> None:
    main, draft = load_model(str(models["main"])), load_model(str(models["draft"]))
    assert draft_mismatch(main.metadata, draft.metadata) is None
    bert = load_model(str(models["embed"]))
    assert "tokenizer" in (draft_mismatch(main.metadata, bert.metadata) or "")
    mm = load_model(str(models["mismatched"]))
    shapes = {t.name: t.shape for t in mm.tensors}
    problem = projector_mismatch(mm.metadata, shapes, vision.TEXT_N_EMBD)
    assert problem is not None and f"width {vision.TEXT_N_EMBD // 2}" in problem
    good = load_model(str(models["mmproj"]))
    assert (
        projector_mismatch(good.metadata, {t.name: t.shape for t in good.tensors}, vision.TEXT_N_EMBD) is None
    )
    assert "not a multimodal projector" in (projector_mismatch(main.metadata, {}, 256) or "")


# -- served through the gateway ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def studio(
    tmp_path_factory: pytest.TempPathFactory, rig_bin: Callable[[str], Path], models: dict[str, Path]
) -> Iterator[Studio]:
    # the command permission: one test names a template file (files the engine reads need it)
    allow = {"LLAMASTUDIO_ALLOW_COMMANDS": "1"}
    with Studio(tmp_path_factory.mktemp("studio"), rig_bin("llama-server"), env=allow) as s:
        s.configure("vision", model=str(models["vision"]), args=ARGS)
        s.configure("blind", model=str(models["chat"]), args=ARGS)
        s.configure("bad-vision", model=str(models["vision"]), args=[*ARGS, "-mm", str(models["mismatched"])])
        s.configure("embed", model=str(models["embed"]), args=["-t", "2"])
        s.configure("rerank", model=str(models["rerank"]), args=["-t", "2"])
        s.configure("qwen3-rerank", model=str(models["qwen3-rerank"]), args=["-t", "2"])
        s.configure(
            "spec",
            model=str(models["main"]),
            args=[*ARGS, "-md", str(models["draft"]), "--spec-draft-n-max", "4"],
        )
        s.configure("base", model=str(models["base"]), args=ARGS)
        yield s


def _client(studio: Studio) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{studio.gateway_url}/v1", api_key="unused", max_retries=0)


def _config(studio: Studio, name: str) -> dict[str, Any]:
    with studio.api() as c:
        r = c.get(f"/api/models/{name}/config")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def _image_message(n_images: int) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": PNG}} for _ in range(n_images)]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": "What is this?"}]}]


def test_vision_model_gets_its_projector_and_takes_images(studio: Studio, models: dict[str, Path]) -> None:
    prepared = _config(studio, "vision")["prepared"]
    argv = prepared["argv"]
    assert argv[argv.index("-mm") + 1] == str(models["mmproj"])  # found beside the model
    assert prepared["traits"]["vision"] is True
    client = _client(studio)
    usage = []
    for n in (1, 2):
        resp = client.chat.completions.create(
            model="vision",
            messages=_image_message(n),
            max_tokens=4,
            temperature=0,  # type: ignore[arg-type]
        )
        assert resp.usage is not None
        usage.append(resp.usage.prompt_tokens)
    assert usage[1] - usage[0] == vision.IMAGE_TOKENS  # the second image: exactly its tokens
    listed = {m["id"]: m for m in client.models.list().model_dump()["data"]}
    assert "vision" in listed["vision"]["capabilities"]
    assert "vision" not in listed["blind"]["capabilities"]


def test_images_through_the_anthropic_messages_api(studio: Studio) -> None:
    client = anthropic.Anthropic(base_url=studio.gateway_url, api_key="unused", max_retries=0)
    data = base64.b64encode(vision.png_bytes()).decode()
    msg = client.messages.create(
        model="vision",
        max_tokens=4,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
                    {"type": "text", "text": "Describe it."},
                ],
            }
        ],
    )
    assert msg.usage.input_tokens > vision.IMAGE_TOKENS


def test_the_projector_is_in_the_estimate(studio: Studio, models: dict[str, Path]) -> None:
    with studio.api() as c:
        r = c.post("/api/models/vision/estimate", json={"args": ARGS})
        plain = c.post("/api/models/blind/estimate", json={"args": ARGS})
    assert r.status_code == 200, r.text
    host = r.json()["devices"][-1]
    mm = load_model(str(models["mmproj"]))
    weights = sum(t.n_bytes for t in mm.tensors)
    assert host["parts"]["mmproj"] >= weights
    assert plain.json()["devices"][-1]["parts"]["mmproj"] == 0


def test_images_to_a_model_without_projector_are_refused_clearly(studio: Studio) -> None:
    with studio.gateway() as g:
        r = g.post(
            "/v1/chat/completions", json={"model": "blind", "messages": _image_message(1), "max_tokens": 2}
        )
    assert r.status_code == 400
    assert "takes no images" in r.json()["error"]["message"]
    assert studio.status("blind")["state"] != "ready"  # refused before anything was loaded


def test_an_image_that_is_not_an_image_is_a_clear_400(studio: Studio) -> None:
    junk = "data:image/png;base64," + base64.b64encode(b"this is not a picture at all").decode()
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": junk}}]}]
    with studio.gateway() as g:
        r = g.post("/v1/chat/completions", json={"model": "vision", "messages": messages, "max_tokens": 2})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["message"]
        ok = g.post(
            "/v1/chat/completions", json={"model": "vision", "messages": _image_message(1), "max_tokens": 2}
        )
    assert ok.status_code == 200, ok.text  # the model survived it


def test_image_urls_are_fetched_by_the_gateway_never_from_local_addresses(studio: Studio) -> None:
    """llama-server would fetch this itself from the studio's machine (SSRF): the gateway refuses."""
    messages = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"{studio.api_url}/"}}]}
    ]
    with studio.gateway() as g:
        r = g.post("/v1/chat/completions", json={"model": "vision", "messages": messages, "max_tokens": 2})
    assert r.status_code == 400
    assert "private or local address" in r.json()["error"]["message"]


class _Counted(BaseHTTPRequestHandler):
    """An image server on this machine that counts who fetched from it."""

    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = vision.png_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("form", ["responses", "anthropic-tool-result", "chat-escaped", "new-model"])
def test_no_form_of_a_local_image_url_reaches_the_engine(studio: Studio, form: str) -> None:
    """Regression (review of 110c697): the gateway looked for ``"url": "…"`` bytes only, so
    Responses' flat ``input_image``, an image inside an Anthropic ``tool_result``, an escaped key,
    and any image to a model the gateway had not prepared yet went to llama-server, which fetched
    them from the studio's machine (SSRF). Each is refused and the local server is never asked."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Counted)
    _Counted.hits = []
    with running(srv):
        url = f"http://127.0.0.1:{srv.server_address[1]}/cat.png"
        image = {"type": "image", "source": {"type": "url", "url": url}}
        path, body = {
            "responses": (
                "/v1/responses",
                {
                    "model": "vision",
                    "input": [{"role": "user", "content": [{"type": "input_image", "image_url": url}]}],
                },
            ),
            "anthropic-tool-result": (
                "/v1/messages",
                {
                    "model": "vision",
                    "max_tokens": 2,
                    "messages": [
                        {
                            "role": "assistant",
                            "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
                        },
                        {
                            "role": "user",
                            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [image]}],
                        },
                    ],
                },
            ),
            "chat-escaped": (
                "/v1/chat/completions",
                {"model": "vision", "max_tokens": 2, "messages": _image_message(0)},
            ),
            "new-model": (
                "/v1/chat/completions",
                {"model": "not-prepared-yet", "max_tokens": 2, "messages": _image_message(0)},
            ),
        }[form]
        raw = json.dumps(body).encode()
        if form in ("chat-escaped", "new-model"):
            part = {"type": "image_url", "image_url": {"url": url}}
            body["messages"][0]["content"].append(part)  # type: ignore[index]
            raw = json.dumps(body).encode()
            if form == "chat-escaped":
                raw = raw.replace(b'"url"', b'"\\u0075rl"')
        with studio.gateway() as g:
            r = g.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert "private or local address" in r.json()["error"]["message"]
    assert _Counted.hits == []


def test_a_directory_of_several_models_gives_each_only_a_projector_that_fits(
    studio: Studio, models: dict[str, Path], tmp_path: Path
) -> None:
    """Regression (review of 79ce1c2): an added model takes an mmproj of its directory on its
    own, and a directory such as ~/models holds other models' projectors too: a text model beside
    a vision model's mmproj could not start ("the projector … does not fit this model"), and a
    vision model beside another's F16 mmproj got that one. Each now takes only one of its width."""
    text_dir, vision_dir = tmp_path / "text", tmp_path / "vision"
    for d in (text_dir, vision_dir):
        d.mkdir()
        (d / "mmproj-tiny-llava.gguf").write_bytes(models["mmproj"].read_bytes())  # width 256
    (text_dir / "chat.gguf").write_bytes(models["chat"].read_bytes())  # width 128
    (vision_dir / "tiny-llava.gguf").write_bytes(models["vision"].read_bytes())  # width 256
    vision.write_mismatched_mmproj(vision_dir / "mmproj-other-F16.gguf")  # 128, preferred (F16)
    studio.configure("dir-text", model=str(text_dir / "chat.gguf"), args=ARGS)
    studio.configure("dir-vision", model=str(vision_dir / "tiny-llava.gguf"), args=ARGS)
    text, seeing = _config(studio, "dir-text"), _config(studio, "dir-vision")
    assert text["prepared"] is not None, text["error"]
    assert "-mm" not in text["prepared"]["argv"]
    assert text["prepared"]["traits"]["vision"] is False
    assert seeing["prepared"] is not None, seeing["error"]
    argv = seeing["prepared"]["argv"]
    assert argv[argv.index("-mm") + 1] == str(vision_dir / "mmproj-tiny-llava.gguf")


def test_a_projector_of_another_model_is_refused_with_the_widths(studio: Studio) -> None:
    view = _config(studio, "bad-vision")
    assert view["prepared"] is None
    assert "produces embeddings of width 128" in view["error"]
    with studio.gateway() as g:
        r = g.post("/v1/chat/completions", json={"model": "bad-vision", "messages": _image_message(1)})
        assert r.status_code == 400
        assert "width 128" in r.json()["error"]["message"]
        ok = g.post(
            "/v1/chat/completions", json={"model": "vision", "messages": _image_message(1), "max_tokens": 2}
        )
    assert ok.status_code == 200  # the neighbour is unaffected


def test_embeddings_on_demand(studio: Studio, models: dict[str, Path]) -> None:
    argv = _config(studio, "embed")["prepared"]["argv"]
    assert "--embedding" in argv
    facts = facts_from_model(load_model(str(models["embed"])))
    # a whole input in one micro-batch: -ub/-b raised to the trained context (512 = the default)
    studio.configure("embed-small-ub", model=str(models["embed"]), args=["-t", "2", "-ub", "64", "-b", "64"])
    small = _config(studio, "embed-small-ub")["prepared"]["argv"]
    ub = int(small[small.index("-ub") + 1]) if "-ub" in small else 512  # llama-server's default
    assert ub == facts.context_length == 512
    width = facts.embedding_length
    resp = _client(studio).embeddings.create(model="embed", input=["hello world", "a second text"])
    assert len(resp.data) == 2
    assert all(len(d.embedding) == width for d in resp.data)
    assert resp.data[0].embedding != resp.data[1].embedding


@pytest.mark.parametrize("name", ["rerank", "qwen3-rerank"])
def test_rerank_scores_each_document(studio: Studio, name: str) -> None:
    docs = ["a cat sat on the mat", "stock prices fell", "the weather is nice"]
    with studio.gateway() as g:
        for path in ("/v1/rerank", "/rerank"):
            r = g.post(path, json={"model": name, "query": "where is the cat?", "documents": docs})
            assert r.status_code == 200, r.text
            results = r.json()["results"]
            assert sorted(x["index"] for x in results) == [0, 1, 2]
            assert all(isinstance(x["relevance_score"], float) for x in results)
    assert "--reranking" in _config(studio, name)["prepared"]["argv"]


def test_requests_a_model_cannot_answer_are_refused(studio: Studio) -> None:
    with studio.gateway() as g:
        chat = g.post(
            "/v1/chat/completions", json={"model": "rerank", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert chat.status_code == 400
        assert (
            "reranking model" in chat.json()["error"]["message"]
            and "/v1/rerank" in chat.json()["error"]["message"]
        )
        emb = g.post("/v1/embeddings", json={"model": "blind", "input": "x"})
        assert emb.status_code == 400 and "chat model" in emb.json()["error"]["message"]
        rr = g.post("/v1/rerank", json={"model": "embed", "query": "q", "documents": ["d"]})
        assert rr.status_code == 400 and "embedding model" in rr.json()["error"]["message"]
    assert studio.status("rerank")["state"] in ("stopped", "ready")  # never started for a chat


def test_speculative_decoding_is_really_on(studio: Studio, models: dict[str, Path]) -> None:
    prepared = _config(studio, "spec")["prepared"]
    argv = prepared["argv"]
    assert argv[argv.index("-md") + 1] == str(models["draft"])
    assert argv[argv.index("--spec-type") + 1] == "draft-simple"
    assert prepared["traits"]["draft"] == str(models["draft"])
    with studio.api() as c:
        est = c.post(
            "/api/models/spec/estimate",
            json={"args": prepared["argv"][3:0] or _config(studio, "spec")["config"]["args"]},
        )
    assert est.status_code == 200, est.text
    assert est.json()["devices"][-1]["parts"]["draft"] > load_model(str(models["draft"])).file_size // 2
    client = _client(studio)
    for prompt in ("one two three four", "the quick brown fox", "count: 1 2 3"):
        client.completions.create(model="spec", prompt=prompt, max_tokens=24, temperature=0)
    with studio.gateway() as g:
        metrics = g.get("/metrics").text
    drafted = re.search(r'llamastudio_draft_tokens_total\{model="spec"\} (\d+)', metrics)
    accepted = re.search(r'llamastudio_draft_accepted_tokens_total\{model="spec"\} (\d+)', metrics)
    assert drafted and int(drafted.group(1)) > 0, metrics
    assert accepted and int(accepted.group(1)) > 0
    assert 'llamastudio_draft_acceptance_ratio{model="spec"}' in metrics


def test_a_base_model_is_marked(studio: Studio) -> None:
    view = _config(studio, "base")
    assert view["prepared"]["traits"]["chat_template"] is False
    assert any("no chat template" in w for w in view["prepared"]["warnings"])
    with studio.gateway() as g:
        listed = {m["id"]: m for m in g.get("/v1/models").json()["data"]}
    assert listed["base"]["chat_template"] is False
    assert listed["base"]["capabilities"] == ["completion"]
    assert listed["blind"]["chat_template"] is True
    assert listed["embed"]["capabilities"] == ["embedding"]
    assert listed["rerank"]["capabilities"] == ["rerank"]
    resp = _client(studio).completions.create(model="base", prompt="Once upon a time", max_tokens=4)
    assert resp.choices[0].text is not None


def test_library_facts_carry_the_purpose(studio: Studio, models: dict[str, Path]) -> None:
    with studio.api() as c:
        r = c.post("/api/models", json={"path": str(models["embed"].parent)})
        assert r.status_code == 201, r.text
        listed = c.get("/api/models").json()
    by_path = {m["path"]: m for m in (listed if isinstance(listed, list) else listed["models"])}
    assert by_path[str(models["embed"])]["facts"]["role"] == "embedding"
    assert by_path[str(models["base"])]["facts"]["chat_template"] is False
    assert by_path[str(models["chat"])]["facts"]["template_family"] == "chatml"


def test_draft_candidates_share_the_vocabulary(studio: Studio, models: dict[str, Path]) -> None:
    with studio.api() as c:
        c.post("/api/models", json={"path": str(models["main"].parent)})
        r = c.get("/api/models/spec/drafts")
    assert r.status_code == 200, r.text
    paths = [d["path"] for d in r.json()]
    assert str(models["draft"]) in paths
    assert str(models["main"]) not in paths


# -- the estimate against what llama-server logged (fixtures recorded from the rig's b11434) ----------
MiB = 1 << 20


def _logged(name: str) -> LoggedBuffers:
    return parse_log((Path(__file__).parent / "fixtures" / "logs" / f"{name}.log").read_text())


@pytest.mark.parametrize(
    ("fixture", "shape", "args"),
    [
        ("mmproj-mlp", vision.TINY, []),
        ("mmproj-mlp-vitl336", vision.VisionShape(336, 14, 1024, 16, 4096, 3, 768), []),
        ("mmproj-mlp-vitl336-fa-off", vision.VisionShape(336, 14, 1024, 16, 4096, 3, 768), ["-fa", "off"]),
    ],
)
def test_projector_estimate_matches_the_log(
    tmp_path: Path, vocab: Vocab, fixture: str, shape: vision.VisionShape, args: list[str]
) -> None:
    model, _ = vision.write_vision_pair(tmp_path, vocab)
    mmproj = tmp_path / "mmproj.gguf"
    vision.write_mmproj(mmproj, shape=shape)
    mm = load_model(str(mmproj))
    logged = _logged(fixture)
    est = estimate(load_model(str(model)), parse_server_args(args), (), companions=Companions(mm, None))
    got, want = est.host.mmproj / MiB, logged.total("mmproj")
    weights = sum(t.n_bytes for t in mm.tensors)
    assert weights <= est.host.mmproj  # the weights are exact: the compute buffer comes on top
    assert abs(got - want) <= max(0.05 * want, 0.02), (fixture, got, want)
    assert (
        est.host.model_logged is not None and abs(est.host.model_logged / MiB - logged.total("model")) < 0.01
    )


def test_draft_estimate_matches_the_log(tmp_path: Path, vocab: Vocab) -> None:
    main, draft = embed.write_draft_pair(tmp_path, vocab)
    logged = _logged("draft-pair")
    flags = parse_server_args(["-c", "4096", "-md", str(draft), "--spec-draft-n-max", "8"])
    est = estimate(load_model(str(main)), flags, (), companions=Companions(None, load_model(str(draft))))
    got, want = est.host.draft / MiB, logged.total("draft")
    assert abs(got - want) <= 0.1 * want, (got, want)
    for cat in ("kv", "output"):  # the target's own categories are unchanged by its draft
        assert abs(getattr(est.host, cat) / MiB - logged.total(cat)) <= logged.tolerance(cat)


@pytest.mark.parametrize(("name", "category"), [("vision-lv", "mmproj"), ("spec-lv", "draft")])
def test_the_studio_estimate_matches_what_its_process_logged(
    studio: Studio, models: dict[str, Path], name: str, category: str
) -> None:
    """The studio's own estimate of a running configuration against that process's ``-lv 4`` log."""
    if category == "mmproj":
        args = [*ARGS, "-lv", "4"]
        studio.configure(name, model=str(models["vision"]), args=args)
    else:
        args = [*ARGS, "-md", str(models["draft"]), "-lv", "4"]
        studio.configure(name, model=str(models["main"]), args=args)
    with studio.gateway() as g:
        r = g.post("/v1/completions", json={"model": name, "prompt": "hi", "max_tokens": 2})
        assert r.status_code == 200, r.text
    with studio.api() as c:
        lines = c.get(f"/api/models/{name}/logs", params={"tail": 5000}).json()["lines"]
        est = c.post(f"/api/models/{name}/estimate", json={"args": args}).json()
    logged = parse_log("\n".join(lines))
    want = logged.total(category)
    got = est["devices"][-1]["parts"][category] / MiB
    assert want > 0, "the log names no such buffers"
    assert abs(got - want) <= max(0.1 * want, 0.02), (category, got, want)


@pytest.mark.parametrize(("gpu_mib", "offload"), [(1100, False), (1300, True)])
def test_the_planner_moves_the_projector_off_a_full_gpu(
    tmp_path: Path, vocab: Vocab, gpu_mib: int, offload: bool
) -> None:
    """A ViT-L projector (94 MiB) beside a tiny model on a GPU with ~76 MiB of budget: every layer
    stays on the GPU and the projector goes to the CPU; with room, both are on the GPU."""
    model, _ = vision.write_vision_pair(tmp_path, vocab)
    mmproj = tmp_path / "mmproj-vitl.gguf"
    vision.write_mmproj(mmproj, shape=vision.VisionShape(336, 14, 1024, 16, 4096, 3, 768))
    hw = parse_profile(f"1x{gpu_mib}MiB", 64 << 30, 60 << 30)
    p = plan(load_model(str(model)), hw, ctx=4096, companions=Companions(load_model(str(mmproj)), None))
    assert p.flags.n_gpu_layers == GPU_LAYERS_ALL
    assert ("--no-mmproj-offload" not in p.flags.to_args()) == offload
    on_gpu = p.estimate.device("CUDA0").mmproj
    assert (on_gpu > 0) == offload and (p.estimate.host.mmproj > 0) != offload
    assert offload or any("--no-mmproj-offload" in r for r in p.reasons)


def test_a_chat_template_override(studio: Studio, models: dict[str, Path], tmp_path: Path) -> None:
    studio.configure("base-chatml", model=str(models["base"]), args=[*ARGS, "--chat-template", "chatml"])
    view = _config(studio, "base-chatml")
    assert view["prepared"]["traits"]["chat_template"] is True
    assert not any("no chat template" in w for w in view["prepared"]["warnings"])
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    studio.configure(
        "base-file", model=str(models["base"]), args=[*ARGS, "--chat-template-file", str(template)]
    )
    resp = _client(studio).chat.completions.create(
        model="base-file", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert resp.choices[0].message is not None
    binary = tmp_path / "binary.bin"
    binary.write_bytes(b"\xff\xfe\x00GGUF" * 64)
    cases = (
        (str(binary), "not UTF-8 text"),
        (str(models["base"]), "at most 1 MiB"),
        ("t.jinja", "absolute path"),
        (str(tmp_path / "missing.jinja"), "not a file"),
    )
    for bad, problem in cases:
        studio.configure("base-bad", model=str(models["base"]), args=[*ARGS, "--chat-template-file", bad])
        assert problem in _config(studio, "base-bad")["error"]


def test_estimate_refuses_companions_llama_server_would(models: dict[str, Path]) -> None:
    """The CLI checks -mm / -md as a start does: one clear line, exit 2, no table."""
    cases = [
        (["-mm", str(models["draft"])], "is not a multimodal projector"),
        (["-mm", str(models["mismatched"])], "produces embeddings of width 128"),
        (["-md", str(models["mmproj"])], "cannot draft for it"),
    ]
    for args, problem in cases:
        done = subprocess.run(
            [sys.executable, "-m", "llamastudio", "estimate", str(models["vision"]), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert problem in done.stderr and "Traceback" not in done.stderr
    estimate_cmd = [sys.executable, "-m", "llamastudio", "estimate", str(models["vision"])]
    ok = subprocess.run(
        [*estimate_cmd, "-mm", str(models["mmproj"]), "--json"], capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["devices"][-1]["mmproj"] > 0
