"""Docker packaging: docker-compose.yml and the Dockerfile agree with the code they ship."""

from __future__ import annotations

import fnmatch
import importlib
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from libs import settings
from shop import cli
from shop.supervisor import SERVICES

ROOT = Path(__file__).resolve().parent.parent
NATS = "nats"  # the compose service NATS_URL points at


def compose_services() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    services = data.get("services")
    assert isinstance(services, dict) and services, "docker-compose.yml has no services"
    return services


def compose_volumes() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return data.get("volumes") or {}


def app_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose_services().items() if name != NATS}


def args(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def flag_value(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def assert_cli_accepts(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`shop ARGV --help` exits 0 only if the real parser takes ARGV (a bad choice exits 2)."""
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--help"])
    capsys.readouterr()
    assert exited.value.code == 0, f"`shop {' '.join(argv)}` is refused by shop/cli.py"


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def instruction_args(keyword: str) -> list[str]:
    return [rest for kw, rest in dockerfile() if kw == keyword]


def exec_form(keyword: str) -> list[str]:
    found = instruction_args(keyword)
    assert found, f"the Dockerfile has no {keyword}"
    value = json.loads(found[-1])  # the last one wins
    assert isinstance(value, list), f"{keyword} is not in exec (JSON) form"
    return [str(v) for v in value]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in instruction_args("ENV"):
        tokens = shlex.split(rest)
        if tokens and "=" not in tokens[0]:  # legacy `ENV KEY value`
            env[tokens[0]] = " ".join(tokens[1:])
            continue
        env.update(token.partition("=")[::2] for token in tokens)
    return env


def copied_sources() -> set[str]:
    sources: set[str] = set()
    for rest in instruction_args("COPY") + instruction_args("ADD"):
        tokens = [t for t in shlex.split(rest) if not t.startswith("--")]
        sources.update(t.removeprefix("./").rstrip("/") or "." for t in tokens[:-1])
    return sources


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


# docker-compose.yml


def test_nats_is_the_official_image_with_jetstream_on_a_volume() -> None:
    services = compose_services()
    assert NATS in services, "docker-compose.yml has no `nats` service"
    nats = services[NATS]
    assert str(nats.get("image", "")).startswith("nats:"), "nats must use the official nats: image"
    argv = args(nats.get("command"))
    assert "-js" in argv or "--jetstream" in argv, "nats runs without JetStream (-js)"
    store = flag_value(argv, "-sd", "--store_dir")
    assert store, "nats has no JetStream store directory (-sd DIR)"
    targets = {}
    for volume in nats.get("volumes") or []:
        if isinstance(volume, dict):
            targets[volume.get("target")] = volume.get("source")
        else:
            source, _, rest = str(volume).partition(":")
            targets[rest.split(":")[0]] = source
    assert store in targets, f"nothing is mounted on the JetStream store {store}"
    assert targets[store] in compose_volumes(), "the JetStream store is not a named volume"


def test_nats_has_a_healthcheck() -> None:
    test = args(compose_services()[NATS].get("healthcheck", {}).get("test"))
    assert test and test[0] not in {"NONE"}, "nats has no healthcheck"
    argv = args(compose_services()[NATS].get("command"))
    monitor = flag_value(argv, "-m", "--http_port")
    assert monitor and any(f":{monitor}/" in part for part in test), (
        "the healthcheck must ask the monitoring port that nats is started with (-m PORT)"
    )


def test_every_service_is_in_compose_and_every_entry_is_a_service() -> None:
    entries = app_services()
    for name, svc in entries.items():
        command = svc.get("command")
        assert isinstance(command, list), f"{name}: command must be a list: ['run', NAME]"
        assert command == ["run", name], f"{name}: command {command} is not ['run', '{name}']"
        assert name in SERVICES, f"{name} is in docker-compose.yml but not in SERVICES"
    missing = set(SERVICES) - set(entries)
    assert not missing, f"SERVICES without a docker-compose.yml entry: {sorted(missing)}"


def test_services_run_the_project_image() -> None:
    services = compose_services()
    built = {}
    for name, svc in services.items():
        build = svc.get("build")
        if build is None:
            continue
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (ROOT / context).resolve() == ROOT, f"{name}: builds from {context}, not the repo"
        dockerfile_name = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
        assert (ROOT / (dockerfile_name or "Dockerfile")).is_file()
        built[name] = svc.get("image")
    assert built, "no service builds the project's Dockerfile"
    images = {image for image in built.values() if image}
    for name, svc in app_services().items():
        assert name in built or svc.get("image") in images, f"{name}: not the project image"


def test_compose_commands_are_accepted_by_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    for svc in app_services().values():
        assert_cli_accepts(args(svc.get("command")), capsys)
    with pytest.raises(SystemExit) as refused:  # the check above can fail
        cli.main(["run", "no-such-service", "--help"])
    capsys.readouterr()
    assert refused.value.code == 2


def test_services_find_nats_and_wait_for_it() -> None:
    services = compose_services()
    nats_argv = args(services[NATS].get("command"))
    nats_port = int(flag_value(nats_argv, "-p", "--port") or 4222)
    for name, svc in app_services().items():
        url = urlsplit(environment(svc).get("NATS_URL", ""))
        assert url.scheme == "nats", f"{name}: NATS_URL is not a nats:// URL"
        assert url.hostname == NATS, f"{name}: NATS_URL does not point at the nats service"
        assert (url.port or 4222) == nats_port, f"{name}: NATS_URL has the wrong port"
        depends = svc.get("depends_on") or {}
        assert NATS in depends, f"{name}: does not depend on nats"
        assert isinstance(depends, dict), f"{name}: depends_on must wait for nats to be healthy"
        assert depends[NATS].get("condition") == "service_healthy", f"{name}: starts too early"
        assert svc.get("restart") in {"unless-stopped", "always", "on-failure"}, name


# Settings compose requires (${VAR:?why}) and a valid value to check the rest with.
REQUIRED = {"BOT_TOKEN": "123456:sample-token"}


def test_compose_defaults_are_valid_settings() -> None:
    for name, svc in app_services().items():
        env = environment(svc)
        for key, value in env.items():
            if re.fullmatch(r"\$\{\w+:\?[^}]*\}", value):
                assert key in REQUIRED, f"{name}: {key} is required; say why in the README"
                env = {**env, key: REQUIRED[key]}
        resolved = {
            k: re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", v)
            for k, v in env.items()
            if "${" not in re.sub(r"\$\{\w+:?-([^}]*)\}", "", v)
        }
        assert resolved.keys() == env.keys(), f"{name}: a ${{VAR}} without a default"
        settings.load(resolved)  # raises SettingsError naming a bad default
        pass_through = {k for k, v in env.items() if "${" in v}
        assert pass_through, f"{name}: no setting can be set from the environment"


def test_no_container_name() -> None:
    for name, svc in compose_services().items():
        assert "container_name" not in svc, f"{name}: container_name stops `--scale`"


# Dockerfile


def test_dockerfile_base_is_python_311() -> None:
    froms = instruction_args("FROM")
    assert froms, "the Dockerfile has no FROM"
    image = next(t for t in froms[-1].split() if not t.startswith("--"))
    assert image.startswith("python:3.11"), f"the image is built on {image}, not python:3.11"
    assert pyproject()["project"]["requires-python"].startswith(">=3.11")


def test_dockerfile_installs_the_project() -> None:
    installs = [
        step
        for rest in instruction_args("RUN")
        for step in re.split(r"&&|;", rest)
        if "pip" in (tokens := shlex.split(step)) and "install" in tokens and "." in tokens
    ]
    assert installs, "the Dockerfile does not `pip install .` the project"
    assert all("-e" not in shlex.split(step) for step in installs), "an editable install"
    packages = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = {"pyproject.toml", pyproject()["project"]["readme"]}
    needed |= {p.rstrip("*").rstrip(".") for p in packages}
    sources = copied_sources()
    assert "." in sources or needed <= sources, f"not copied: {sorted(needed - sources)}"


def test_dockerfile_runs_shop_as_a_user(capsys: pytest.CaptureFixture[str]) -> None:
    assert exec_form("ENTRYPOINT") == ["shop"]
    assert_cli_accepts(exec_form("CMD"), capsys)
    users = instruction_args("USER")
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image runs as root"


def test_dockerfile_environment_is_valid_settings() -> None:
    env = image_env()
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("LOG_FORMAT") == "json"
    assert env.get("DATA_DIR") == "/data"
    settings.load({k: v for k, v in env.items() if not k.startswith(("PYTHON", "PIP"))})


def test_shop_console_script_exists() -> None:
    target = pyproject()["project"]["scripts"]["shop"]
    module, _, function = target.partition(":")
    assert callable(getattr(importlib.import_module(module), function, None)), target


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        verdict = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            if fnmatch.fnmatch(path, pattern.removeprefix("!").strip("/")):
                verdict = not negated
        return verdict

    for path in (".git", ".venv", "data", ".pytest_cache"):
        assert ignored(path), f".dockerignore does not exclude {path}"
    for path in copied_sources():
        assert not ignored(path), f".dockerignore excludes {path}, which the Dockerfile copies"
