"""The container as its files declare it: the Dockerfile's runtime stage and the compose service, read
without a Docker engine."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stage:
    """One ``FROM`` stage of a Dockerfile: its instructions, its ENV and the rest that matters here."""

    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)
    env: dict[str, str] = field(default_factory=dict)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.instructions if i == instruction]

    def json_args(self, instruction: str) -> list[str]:
        """The exec form (a JSON array) of the stage's last `instruction`."""
        (*_, last) = self.args(instruction)
        value: list[str] = json.loads(last)
        return value


def dockerfile(path: Path = ROOT / "Dockerfile") -> list[Stage]:
    """The stages of a Dockerfile, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append(Stage(rest.split()[0]))
            continue
        stages[-1].instructions.append((instruction, rest.strip()))
        if instruction == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                stages[-1].env[key] = value
    return stages


def runtime() -> Stage:
    """The image's last stage: what runs."""
    return dockerfile()[-1]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return data


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's ``environment`` (list of NAME=VALUE, or a map)."""
    env = service.get("environment", {})
    if isinstance(env, dict):
        return {k: str(v) for k, v in env.items()}
    return dict(entry.split("=", 1) for entry in env)
