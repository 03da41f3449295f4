"""The Dockerfile and docker-compose.yml, checked without a Docker engine.

docker-compose.yml is validated against the Compose Specification's JSON schema (the copy that
check-jsonschema ships), and every `coda` command in either file is shown to exist, with each of
its flags, by asking the installed `coda` for that command's --help.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
CODA = Path(sys.executable).parent / "coda"
CODA_SERVICES = ("api", "projector")
ROOT_USERS = {"root", "0"}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    result = _check_compose_schema(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_rejects_a_misspelt_key(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    text = (ROOT / "docker-compose.yml").read_text()
    broken.write_text(text.replace("    healthcheck:", "    helthcheck:", 1))
    result = _check_compose_schema(broken)
    assert result.returncode == 1
    assert "'helthcheck' was unexpected" in result.stdout


def test_redis_keeps_every_write_and_never_evicts() -> None:
    redis = _compose()["services"]["redis"]
    options = _options(redis["command"])
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_redis_is_7_2_or_newer_as_the_projector_health_check_needs() -> None:
    # Before 7.2, XINFO CONSUMERS `idle` counted from the last read that returned entries: a
    # projector on a quiet feed would look dead.
    image, _, tag = _compose()["services"]["redis"]["image"].partition(":")
    assert image == "redis"
    assert Version(tag.split("-")[0]) >= Version("7.2")


@pytest.mark.parametrize("service", ["redis", *CODA_SERVICES])
def test_every_service_has_a_health_check(service: str) -> None:
    test = _compose()["services"][service]["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL")
    assert len(test) > 1


@pytest.mark.parametrize("service", CODA_SERVICES)
def test_coda_services_wait_for_a_healthy_redis(service: str) -> None:
    depends_on = _compose()["services"][service]["depends_on"]
    assert depends_on["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize("service", CODA_SERVICES)
def test_coda_services_use_the_compose_redis(service: str) -> None:
    environment = _compose()["services"][service]["environment"]
    assert environment["REDIS_URL"] == "redis://redis:6379/0"


@pytest.mark.parametrize("service", CODA_SERVICES)
def test_coda_services_require_the_seal_key_with_no_default(service: str) -> None:
    # Without one shared key every container would make its own, and `coda verify` in another
    # container would report every sealed thread as tampered with.
    value = _compose()["services"][service]["environment"]["CODA_SEAL_KEY"]
    assert re.fullmatch(r"\$\{CODA_SEAL_KEY:\?[^}]+\}", value)


def test_api_leaves_the_projection_to_the_projector_service() -> None:
    assert "--no-projector" in _command("api")
    assert _command("projector")[:2] == ["coda", "project"]


def test_api_is_ready_only_when_redis_is() -> None:
    api = _compose()["services"]["api"]
    assert "/readyz" in _python_code(_healthcheck("api"))
    assert "8000:8000" in api["ports"]


@pytest.mark.parametrize("source", ["api", "projector", "Dockerfile"])
def test_command_is_a_coda_command_whose_flags_exist(source: str) -> None:
    program, subcommand, *args = _command(source)
    assert program == "coda"
    result = subprocess.run(
        [str(CODA), subcommand, "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    known = set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", result.stdout))
    flags = {arg.partition("=")[0] for arg in args if arg.startswith("-")}
    assert flags <= known, f"`coda {subcommand}` has no {sorted(flags - known)}"


@pytest.mark.parametrize("source", ["api", "projector", "Dockerfile"])
def test_python_health_check_compiles(source: str) -> None:
    compile(_python_code(_healthcheck(source)), f"<{source} health check>", "exec")


def test_dockerfile_serves_on_the_exposed_port() -> None:
    argv = _command("Dockerfile")
    options = _options(argv)
    exposed = [i.args for i in _final_stage() if i.keyword == "EXPOSE"]
    assert argv[:2] == ["coda", "serve"]
    assert options["--host"] == "0.0.0.0"
    assert exposed == [options["--port"]]


def test_dockerfile_python_satisfies_requires_python() -> None:
    requires = SpecifierSet(_pyproject()["project"]["requires-python"])
    versions = {_python_version(i.args) for i in _instructions() if i.keyword == "FROM"}
    # One version in every stage: the runtime stage copies the build stage's virtualenv.
    assert len(versions) == 1
    assert versions.pop() in requires


def test_dockerfile_is_multi_stage() -> None:
    stages = [i.args for i in _instructions() if i.keyword == "FROM"]
    copies = [i.args for i in _final_stage() if i.keyword == "COPY"]
    assert len(stages) >= 2
    assert any(args.startswith("--from=") for args in copies)


def test_dockerfile_runs_as_a_user_that_is_not_root() -> None:
    users = [i.args for i in _final_stage() if i.keyword == "USER"]
    assert users
    assert users[-1].partition(":")[0] not in ROOT_USERS


def test_dockerfile_checks_health_on_healthz() -> None:
    assert "/healthz" in _python_code(_healthcheck("Dockerfile"))


def test_dockerfile_copies_every_package_of_the_wheel() -> None:
    packages = _pyproject()["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = {i.args.split()[0] for i in _instructions() if i.keyword == "COPY"}
    assert set(packages) <= copied


def test_dockerfile_installs_no_extras() -> None:
    runs = " ".join(i.args for i in _instructions() if i.keyword == "RUN")
    assert "pip install" in runs
    assert not re.search(r"\.\[\w", runs)


@pytest.mark.parametrize("entry", [".git", ".venv", ".coda", ".env"])
def test_dockerignore_keeps_local_state_out_of_the_build(entry: str) -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert entry in lines


def _check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    schema = ["--builtin-schema", "vendor.compose-spec"]
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", *schema, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


@cache
def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose


@cache
def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@cache
def _instructions() -> tuple[Instruction, ...]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comment lines may sit inside a continued instruction too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return tuple(instructions)


def _final_stage() -> tuple[Instruction, ...]:
    instructions = _instructions()
    last_from = max(n for n, i in enumerate(instructions) if i.keyword == "FROM")
    return instructions[last_from:]


def _dockerfile_cmd() -> list[str]:
    cmds = [i.args for i in _final_stage() if i.keyword == "CMD"]
    argv: list[str] = json.loads(cmds[-1])  # the exec form: a JSON array
    return argv


def _dockerfile_healthcheck() -> list[str]:
    checks = [i.args for i in _final_stage() if i.keyword == "HEALTHCHECK"]
    options, _, command = checks[-1].partition(" CMD ")
    assert all(option.startswith("--") for option in options.split())
    argv: list[str] = ["CMD", *json.loads(command)]
    return argv


def _command(source: str) -> list[str]:
    """The argv a compose service or (for "Dockerfile") the image runs."""
    if source == "Dockerfile":
        return _dockerfile_cmd()
    argv: list[str] = _compose()["services"][source]["command"]
    return argv


def _healthcheck(source: str) -> list[str]:
    """The health check's test of a compose service or (for "Dockerfile") of the image."""
    if source == "Dockerfile":
        return _dockerfile_healthcheck()
    test: list[str] = _compose()["services"][source]["healthcheck"]["test"]
    return test


def _python_code(test: list[str]) -> str:
    """The program of a `CMD python -c PROGRAM` health check."""
    assert test[:3] == ["CMD", "python", "-c"], test
    return test[3]


def _python_version(from_args: str) -> str:
    image = from_args.split()[0]
    match = re.fullmatch(r"python:(\d+\.\d+)(?:\.\d+)?-slim", image)
    assert match, f"not a python:X.Y-slim image: {image}"
    return match.group(1)


def _options(argv: list[str]) -> dict[str, str]:
    """`--name value` pairs of an argv (flags without a value are left out)."""
    return {
        name: value
        for name, value in pairwise(argv)
        if name.startswith("--") and not value.startswith("--")
    }
