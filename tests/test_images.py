"""``make image-specs``: the Dockerfiles and the component image references, checked without Docker.

A small Dockerfile parser (continuations, comments, parser directives, ARG substitution in FROM)
checks that every instruction is known, every base image is pinned by tag or digest (never
``latest``), the final stage runs as a non-root user, and every ``pip install`` / ``apt-get install``
installs pinned versions only. Then every executor of the compiled pipelines must name the image
its component folder maps to, and that image must have a Dockerfile here.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from components.images import COMPONENT_IMAGES, IMAGES, REGISTRY, VERSION, image_for

REPO = Path(__file__).resolve().parents[1]
IMAGES_DIR = REPO / "images"
KNOWN = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
         "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: joins ``\\`` continuations, drops comments and blank lines."""
    out: list[Instruction] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):  # comment lines inside a continuation are skipped
            continue
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1].rstrip() + " "
            continue
        buffer += line
        keyword, _, args = buffer.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
        buffer = ""
    if buffer:
        raise ValueError(f"line {start}: dangling line continuation")
    return out


def resolve_args(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def pinned_image(ref: str) -> bool:
    """``name:tag`` (not latest) or ``name@sha256:...``."""
    if "@sha256:" in ref:
        return True
    name, _, tag = ref.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


def pip_requirements(command: str) -> list[tuple[list[str], bool]]:
    """(requirement args, uses constraints) for each ``pip install`` in a RUN command."""
    found = []
    for part in re.split(r"&&|;|\|\|", command):
        words = shlex.split(part)
        for i in range(len(words) - 1):
            if words[i].endswith("pip") and words[i + 1] == "install":
                rest = words[i + 2:]
                constrained = any(w in ("-c", "--constraint") or w.startswith("--constraint=") for w in rest)
                reqs, skip = [], False
                for w in rest:
                    if skip:
                        skip = False
                        continue
                    if w in ("-c", "--constraint", "--index-url", "-i", "--extra-index-url", "-r"):
                        skip = True
                        continue
                    if not w.startswith("-"):
                        reqs.append(w)
                found.append((reqs, constrained))
    return found


def apt_packages(command: str) -> list[tuple[list[str], bool]]:
    """(packages, --no-install-recommends) for each ``apt-get install`` in a RUN command."""
    found = []
    for part in re.split(r"&&|;|\|\|", command):
        words = shlex.split(part)
        if "apt-get" in words and "install" in words:
            rest = words[words.index("install") + 1:]
            found.append(([w for w in rest if not w.startswith("-")], "--no-install-recommends" in rest))
    return found


def dockerfiles() -> dict[str, Path]:
    return {p.parent.name: p for p in sorted(IMAGES_DIR.glob("*/Dockerfile"))}


def test_every_image_has_a_dockerfile():
    assert set(dockerfiles()) == set(IMAGES) == {"base", "train", "generate", "validate"}
    assert (REPO / ".dockerignore").exists()


@pytest.mark.parametrize("name", ["base", "train", "generate", "validate"])
def test_dockerfile_is_valid_pinned_and_non_root(name: str):
    path = dockerfiles()[name]
    text = path.read_text()
    assert text.startswith("# syntax=docker/dockerfile:"), f"{path}: parser directive must be line 1"
    instructions = parse_dockerfile(text)
    unknown = [f"line {i.line}: {i.keyword}" for i in instructions if i.keyword not in KNOWN]
    assert not unknown, f"{path}: unknown instructions {unknown}"
    assert instructions[0].keyword in ("FROM", "ARG"), f"{path}: must start with ARG/FROM"

    args: dict[str, str] = {}
    stages, users = [], []
    for ins in instructions:
        if ins.keyword == "ARG" and "=" in ins.args:
            key, _, value = ins.args.partition("=")
            args.setdefault(key.strip(), value.strip().strip('"'))
        elif ins.keyword == "FROM":
            ref = resolve_args(ins.args.split()[0], args)
            stage_names = [s.lower() for s in stages]
            assert ref.lower() in stage_names or pinned_image(ref), f"{path}:{ins.line}: unpinned base image {ref}"
            if " AS " in ins.args.upper():
                stages.append(ins.args.split()[-1])
            users.append([])
        elif ins.keyword == "USER":
            users[-1].append(ins.args.split(":")[0])
        elif ins.keyword == "RUN":
            for reqs, constrained in pip_requirements(ins.args):
                unpinned = [r for r in reqs if "==" not in r and r != "."]
                assert not unpinned, f"{path}:{ins.line}: pip installs unpinned {unpinned}"
                if "." in reqs:  # the project's dependencies are pinned only through constraints.txt
                    assert constrained, f"{path}:{ins.line}: pip install . without constraints"
            for packages, no_recommends in apt_packages(ins.args):
                assert no_recommends, f"{path}:{ins.line}: apt-get install without --no-install-recommends"
                unpinned = [p for p in packages if "=" not in p]
                assert not unpinned, f"{path}:{ins.line}: apt installs unpinned {unpinned}"
    final_users = users[-1] if users else []
    assert final_users, f"{path}: final stage sets no USER (would run as root)"
    assert final_users[-1] not in ("root", "0"), f"{path}: final stage runs as {final_users[-1]}"


def test_parser_rejects_what_it_should():
    """The checks above must be able to fail."""
    assert not pinned_image("python:latest") and not pinned_image("python") and pinned_image("python:3.11-slim")
    assert pip_requirements("pip install numpy && pip install -c c.txt .") == [(["numpy"], False), (["."], True)]
    assert apt_packages("apt-get install -y tshark") == [(["tshark"], False)]
    ins = parse_dockerfile("FROM a:1\nRUN x \\\n  # note\n  y\nUSER 10001\n")
    assert [(i.keyword, i.args) for i in ins] == [("FROM", "a:1"), ("RUN", "x y"), ("USER", "10001")]


def test_component_images_exist_and_match_compiled_pipelines():
    assert set(COMPONENT_IMAGES) == {p.name for p in (REPO / "components").iterdir()
                                     if (p / "component.py").exists()}
    for component, image in COMPONENT_IMAGES.items():
        assert image in dockerfiles(), f"component {component} uses image {image} without a Dockerfile"
        assert image_for(component) == f"{REGISTRY}/netdiffusion-{image}:{VERSION}"
    executor_component = {
        "exec-plan-shards": "encode", "exec-list-classes": "encode", "exec-encode-shard": "encode", "exec-train-model": "train",
        "exec-generate-class": "generate", "exec-repair-flows": "repair", "exec-validate-pcaps": "validate",
        "exec-evaluate-synthetic": "evaluate", "exec-register-model": "register",
        "exec-resolve-model": "register", "exec-publish-outputs": "register",
    }
    seen = set()
    for compiled in sorted((REPO / "pipelines" / "compiled").glob("*.yaml")):
        spec = next(yaml.safe_load_all(compiled.read_text()))
        for name, executor in spec["deploymentSpec"]["executors"].items():
            assert name in executor_component, f"{compiled.name}: unexpected executor {name}"
            expected = image_for(executor_component[name])
            assert executor["container"]["image"] == expected, f"{compiled.name}: {name}"
            seen.add(name)
    assert seen == set(executor_component)
