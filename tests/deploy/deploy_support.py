"""Readers for the deploy kit: kustomize trees, the Dockerfile, .dockerignore, metric names.

Kubernetes tooling (kustomize, a Docker engine) is not available where the tests
run, so these are small, strict readers of exactly the subset the kit uses: a
kustomization with a field they do not understand is an error, not a silent skip.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = sorted(
    p for p in (DEPLOY / "overlays").iterdir() if (p / "kustomization.yaml").is_file()
)

# Environment variables that carry secrets: never a literal value in a manifest.
SECRET_SETTINGS = frozenset(
    {
        "ABGATE_DATABASE_URL",
        "ABGATE_REDIS_URL",
        "ABGATE_ENCRYPTION_KEYS",
        "ABGATE_ADMIN_TOKEN",
        "ABGATE_JWT_SECRET",
    }
)
# Read by the image's HEALTHCHECK (and the exec probes that reuse it), not by abgate.
IMAGE_SETTINGS = frozenset({"ABGATE_HEALTH_PORT", "ABGATE_HEALTH_PATH"})

# Metrics the deploy kit refers to that the code does not define yet (evidence
# work in progress). Dashboards and alerts may use them; nothing else may.
PENDING_METRICS = frozenset(
    {"abgate_experiment_srm_ok", "abgate_routing_last_sync_age_seconds"}
)
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_METRIC_RE = re.compile(r"\babgate_[a-z0-9_]+\b")

Resource = dict[str, Any]


# --------------------------------------------------------------------------- YAML


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_documents(path: Path) -> list[Any]:
    """Every non-empty YAML document of a file (a fresh copy: callers may mutate it)."""
    return copy.deepcopy(_parsed(path.resolve()))


@functools.cache
def _parsed(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.load_all(fh, Loader=_Loader) if doc is not None]


def load_one(path: Path) -> Any:
    (doc,) = load_documents(path)
    return doc


# --------------------------------------------------------------------------- kustomize

KUSTOMIZATION_FIELDS = frozenset({"apiVersion", "kind", "resources", "namespace", "images"})
# Kinds the namespace transformer leaves alone.
_CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding"})


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


def render(directory: Path) -> list[Resource]:
    """Build a kustomization the way ``kustomize build`` does for the fields we use."""
    kustomization = load_one(directory / "kustomization.yaml")
    unknown = set(kustomization) - KUSTOMIZATION_FIELDS
    if unknown:
        raise ValueError(f"{directory}: kustomization fields not understood: {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            resources.extend(render(target))
        else:
            if directory.resolve() not in target.parents:
                raise ValueError(f"{directory}: file {entry} is outside the kustomization root")
            resources.extend(load_documents(target))
    namespace = kustomization.get("namespace")
    if namespace:
        for resource in resources:
            if resource["kind"] not in _CLUSTER_SCOPED:
                resource.setdefault("metadata", {})["namespace"] = namespace
    for image in kustomization.get("images", []):
        for container in all_containers(resources):
            name, tag = _split_image(container["image"])
            if name == image["name"]:
                new_name = image.get("newName", name)
                new_tag = image.get("newTag", tag)
                container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name
    return resources


def _split_image(ref: str) -> tuple[str, str | None]:
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        return ref.rsplit(":", 1)[0], ref.rsplit(":", 1)[1]
    return ref, None


def pod_spec(resource: Resource) -> Resource | None:
    kind = resource["kind"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        return resource["spec"]["template"]["spec"]
    if kind == "CronJob":
        return resource["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind == "Pod":
        return resource["spec"]
    return None


def pod_template_metadata(resource: Resource) -> Resource:
    if resource["kind"] == "CronJob":
        return resource["spec"]["jobTemplate"]["spec"]["template"]["metadata"]
    return resource["spec"]["template"]["metadata"]


def workloads(resources: list[Resource]) -> Iterator[tuple[Resource, Resource]]:
    for resource in resources:
        spec = pod_spec(resource)
        if spec is not None:
            yield resource, spec


def containers_of(spec: Resource) -> list[Resource]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def all_containers(resources: list[Resource]) -> Iterator[Resource]:
    for _, spec in workloads(resources):
        yield from containers_of(spec)


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    matches = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    stage: int  # index of the FROM it belongs to

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction (ENTRYPOINT/CMD/HEALTHCHECK CMD)."""
        text = self.value
        if self.keyword == "HEALTHCHECK":
            text = text[text.index("CMD") + 3 :]
        parsed = json.loads(text)
        assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed)
        return parsed

    def options(self) -> dict[str, str]:
        """``--name=value`` flags before the instruction's arguments."""
        found: dict[str, str] = {}
        for word in shlex.split(self.value.split(" CMD ", 1)[0]):
            if word.startswith("--") and "=" in word:
                key, value = word[2:].split("=", 1)
                found[key] = value
        return found


@dataclass
class Dockerfile:
    instructions: list[Instruction]
    stages: list[str] = field(default_factory=list)  # FROM values, in order
    global_args: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Dockerfile:
        logical: list[str] = []
        pending = ""
        for raw in text.splitlines():
            stripped = raw.strip()
            if not pending and (not stripped or stripped.startswith("#")):
                continue
            if pending and stripped.startswith("#"):
                continue  # comment lines inside a continuation are dropped
            if stripped.endswith("\\"):
                pending += stripped[:-1].rstrip() + " "
                continue
            logical.append(pending + stripped)
            pending = ""
        if pending:
            raise ValueError("Dockerfile ends inside a line continuation")
        dockerfile = cls(instructions=[])
        stage = -1
        for line in logical:
            keyword, _, value = line.partition(" ")
            keyword = keyword.upper()
            if keyword == "FROM":
                stage += 1
                dockerfile.stages.append(value.strip())
            elif keyword == "ARG" and stage == -1:
                name, _, default = value.strip().partition("=")
                dockerfile.global_args[name] = default
            dockerfile.instructions.append(Instruction(keyword, value.strip(), stage))
        return dockerfile

    def final(self, keyword: str) -> list[Instruction]:
        last = len(self.stages) - 1
        return [i for i in self.instructions if i.keyword == keyword and i.stage == last]

    def in_stage(self, stage: int, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword and i.stage == stage]

    def resolve(self, value: str) -> str:
        """Substitute global ARG defaults (``${NAME}`` / ``$NAME``)."""
        for name, default in self.global_args.items():
            value = value.replace("${" + name + "}", default).replace("$" + name, default)
        return value

    def final_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for instruction in self.final("ENV"):
            for word in shlex.split(instruction.value):
                key, sep, value = word.partition("=")
                assert sep, f"ENV in legacy 'KEY value' form: {instruction.value}"
                env[key] = value
        return env


def load_dockerfile() -> Dockerfile:
    return Dockerfile.parse((REPO / "Dockerfile").read_text(encoding="utf-8"))


def builder_copy_sources() -> list[str]:
    """Context paths the builder stage COPYs (it copies nothing from other stages)."""
    sources: list[str] = []
    for instruction in load_dockerfile().in_stage(0, "COPY"):
        words = instruction.value.split()
        assert not any(w.startswith("--") for w in words), instruction.value
        sources.extend(w.rstrip("/") for w in words[:-1])
    return sources


# --------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: ``**`` spans directories, ``*``/``?`` stay within one."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z")


@dataclass(frozen=True)
class DockerIgnore:
    rules: tuple[tuple[bool, str, re.Pattern[str]], ...]  # (is_exception, pattern, regex)

    @classmethod
    def parse(cls, text: str) -> DockerIgnore:
        rules = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exception = line.startswith("!")
            pattern = (line[1:].strip() if exception else line).strip("/")
            rules.append((exception, pattern, _pattern_regex(pattern)))
        return cls(tuple(rules))

    def excludes(self, relative: str) -> bool:
        """Whether the path is left out of the build context (the last matching rule wins;
        a rule matches a path or any of its parent directories)."""
        parts = relative.strip("/").split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for exception, _, regex in self.rules:
            if any(regex.match(candidate) for candidate in candidates):
                excluded = not exception
        return excluded

    def may_include_below(self, directory: str) -> bool:
        """Whether an exception rule could bring back something inside an excluded directory."""
        return any(
            exception and (pattern.startswith(directory + "/") or pattern.startswith("*"))
            for exception, pattern, _ in self.rules
        )


def load_dockerignore() -> DockerIgnore:
    return DockerIgnore.parse((REPO / ".dockerignore").read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def _context_files() -> tuple[str, ...]:
    ignore = load_dockerignore()
    files: list[str] = []
    for root, dirs, names in os.walk(REPO):
        base = Path(root).relative_to(REPO).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = [
            d for d in dirs
            if not ignore.excludes(prefix + d) or ignore.may_include_below(prefix + d)
        ]
        files.extend(prefix + n for n in names if not ignore.excludes(prefix + n))
    return tuple(sorted(files))


def build_context_files() -> list[str]:
    """Repository files (relative paths) that ``docker build .`` would send."""
    return list(_context_files())


# --------------------------------------------------------------------------- metrics


def code_metric_names() -> dict[str, str]:
    """Exposed metric names defined by the proxy and admin code -> Prometheus type."""
    import importlib

    from prometheus_client.metrics import MetricWrapperBase

    names: dict[str, str] = {}
    for module_name in ("proxy.metrics", "admin.metrics"):
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                for metric in value.describe():
                    exposed = metric.name + ("_total" if metric.type == "counter" else "")
                    names[exposed] = metric.type
    return names


def known_metric_names() -> frozenset[str]:
    return frozenset(code_metric_names()) | PENDING_METRICS


def referenced_metrics(expr: str) -> set[str]:
    """Metric base names a PromQL expression reads (histogram series folded to their base)."""
    known = known_metric_names()
    found = set()
    for name in _METRIC_RE.findall(expr):
        if name not in known:
            for suffix in _HISTOGRAM_SUFFIXES:
                if name.endswith(suffix) and name[: -len(suffix)] in known:
                    name = name[: -len(suffix)]
                    break
        found.add(name)
    return found
