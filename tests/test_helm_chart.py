"""The Helm chart (deploy/helm/llamastudio, issue O #13 item 4), checked without helm (helm is not
on PyPI/Debian/npm; `helm lint` and `helm template` run in .github/workflows/helm.yml): its YAML
parses, every ``.Values`` a template names exists in values.yaml, every value is documented in the
README's table, template delimiters balance, and the security-relevant defaults hold."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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
