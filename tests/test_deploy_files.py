"""The deployment files checked with what runs here (no Docker engine, no systemd as PID 1).

- docker-compose.yml: the Compose Specification schema (check-jsonschema's vendored copy),
  and every file, volume, service and maskwatch command line it names.
- deploy/docker/Dockerfile: parsed by Docker's own parser (the ``dockerfile`` package);
  every COPY source exists and survives the build context's ignore file.
- deploy/systemd: ``systemd-analyze verify`` and ``systemd-analyze security --offline``.
- deploy/pi: the example configs load with the real config models and document every
  option; install.sh writes a loadable /etc/maskwatch in a scratch root.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import UnionType
from typing import Any, Union, get_args, get_origin

import dockerfile
import pytest
import yaml
from deploy_site import REPO, read_env
from pydantic import BaseModel

from edge.config import EdgeConfig, load_edge_config
from hub.config import HubConfig
from shared.cli import build_parser
from shared.config import load_config

DEPLOY = REPO / "deploy"
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
#: Folders that scripts create (make-users, make-certs); never committed.
GENERATED = ("deploy/secrets", "deploy/mosquitto/certs")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """Parse a maskwatch command line with the real parser; fail with argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"maskwatch {' '.join(argv)}: {err.getvalue().strip()}")


def maskwatch_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if svc.get("image", "").startswith("maskwatch")}


# -- docker-compose.yml ------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_file_refers_only_to_what_exists() -> None:
    spec = compose()
    services = spec["services"]
    assert {"credentials", "mosquitto", "hub", "node-1", "node-2"} <= set(services)
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    for name, svc in services.items():
        for dependency in svc.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        build = svc.get("build")
        if build:
            assert (REPO / build["context"] / build["dockerfile"]).is_file()
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                relative = PurePosixPath(source).relative_to(".").as_posix()
                if relative.startswith(GENERATED):
                    continue
                assert (REPO / relative).exists(), f"{name}: {source} does not exist"
            else:
                assert source in spec["volumes"], f"{name}: volume {source} is not declared"
            assert target.startswith("/")
    ignored = (REPO / ".gitignore").read_text().splitlines()
    for folder in GENERATED:
        assert f"/{folder}/" in ignored, f"{folder} holds secrets or keys and must be git-ignored"


def test_compose_runs_two_scene_nodes_and_a_hub_with_real_command_lines() -> None:
    services = maskwatch_services()
    assert {"hub", "node-1", "node-2"} <= set(services)
    nodes = []
    for name, svc in services.items():
        args = parse_cli(svc["command"])
        credentials = svc["environment"]["CREDENTIALS_FILE"]
        mounts = dict(v.split(":")[1::-1] for v in svc["volumes"])  # target -> source
        assert any(credentials.startswith(target + "/") for target in mounts), f"{name}: credentials not mounted"
        assert any(target == "/var/lib/maskwatch" for target in mounts), f"{name}: state is not on a volume"
        if args.command == "edge":
            assert args.source == "scene:builtin" and args.outbox.startswith("/var/lib/maskwatch/")
            assert credentials.endswith(f"/{args.site}.{args.node}.env")
            nodes.append(f"{args.site}/{args.node}")
        else:
            assert args.command == "hub" and credentials.endswith("/hub.env")
            assert "8080:8080" in svc["ports"]
    assert len(nodes) == 2
    # the logins the nodes use are the ones the credentials service creates
    make_users = " ".join(compose()["services"]["credentials"]["entrypoint"])
    for node in nodes:
        assert f" {node} " in make_users


def test_compose_mounts_every_path_the_broker_config_names() -> None:
    mosquitto = compose()["services"]["mosquitto"]
    targets = [v.split(":")[1] for v in mosquitto["volumes"]]
    texts = [
        (DEPLOY / "mosquitto" / "mosquitto.conf").read_text(),
        (DEPLOY / "mosquitto" / "conf.d" / "tls.conf.example").read_text(),
    ]
    paths = {m for text in texts for m in re.findall(r"^\w+ (/mosquitto/\S+)", text, flags=re.M)}
    assert paths, "no /mosquitto/ paths found"
    for path in paths:
        assert any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets), f"{path} is not mounted"
    # the credentials service runs the shipped scripts from where they are mounted
    credentials = compose()["services"]["credentials"]
    scripts = [word for word in " ".join(credentials["entrypoint"]).split() if word.startswith("/deploy/")]
    assert {PurePosixPath(s).name for s in scripts} == {"make-users", "make-api-token"}
    for script in scripts:
        mount = next(v for v in credentials["volumes"] if script.startswith(v.split(":")[1] + "/"))
        source, target = mount.split(":")[:2]
        assert (REPO / source / PurePosixPath(script).relative_to(target)).is_file(), script


def test_debian_host_recipe_maps_every_broker_path() -> None:
    """docs/deploy.md's sed map puts every /mosquitto/ path of the shipped files under Debian's folders."""
    doc = (REPO / "docs" / "deploy.md").read_text()
    found = re.search(r'^map="(.+)"$', doc, flags=re.M)
    assert found, "docs/deploy.md lost its map= line"
    folder = re.search(r"^D=(\S+)$", doc, flags=re.M)
    assert folder
    script = found.group(1).replace("$D", folder.group(1))
    for name in ("mosquitto.conf", "conf.d/tls.conf.example"):
        proc = subprocess.run(
            ["sed", script, str(DEPLOY / "mosquitto" / name)], capture_output=True, text=True, check=True
        )
        settings = "\n".join(line for line in proc.stdout.splitlines() if not line.lstrip().startswith("#"))
        paths = re.findall(r"^\w+ (/\S+)", settings, flags=re.M)
        assert paths and not re.search(r"(^|\s)/mosquitto/", settings, flags=re.M)
        for path in paths:
            assert path.startswith(("/etc/mosquitto/maskwatch/", "/var/lib/mosquitto/")), path


# -- Dockerfile -----------------------------------------------------------------------


def test_dockerfile_copies_what_exists_and_installs_the_edge_and_hub_extras() -> None:
    commands = dockerfile.parse_file(str(DOCKERFILE))
    ignore = [
        line
        for line in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]

    def kept(path: str) -> bool:  # Docker's rule: the last matching pattern wins
        keep = True
        for pattern in ignore:
            negated = pattern.startswith("!")
            if fnmatch.fnmatch(path, pattern.lstrip("!")) or path.startswith(pattern.lstrip("!") + "/"):
                keep = negated
        return keep

    copies = [c for c in commands if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)]
    assert copies
    for copy in copies:
        for source in copy.value[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: missing"
            assert kept(source), f"COPY {source}: excluded by Dockerfile.dockerignore"
    assert not kept(".venv") and not kept("deploy/secrets")
    runs = " ".join(" ".join(c.value) for c in commands if c.cmd == "RUN")
    assert '".[edge,hub]"' in runs and "maskwatch model fetch" in runs
    bases = [c.value[0] for c in commands if c.cmd == "FROM"]
    python = re.search(r'requires-python = ">=(\d+)\.(\d+)"', (REPO / "pyproject.toml").read_text())
    assert python
    for base in bases:
        version = re.match(r"python:(\d+)\.(\d+)", base)
        assert version and tuple(map(int, version.groups())) >= tuple(map(int, python.groups())), base
    entrypoint = next(c for c in commands if c.cmd == "ENTRYPOINT").value[0]
    copied = {c.value[-1]: c.value[0] for c in copies}
    assert entrypoint in copied and (REPO / copied[entrypoint]).stat().st_mode & 0o111


# -- systemd ------------------------------------------------------------------------

UNITS = {"maskwatch-edge.service": "edge", "maskwatch-hub.service": "hub"}


def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_unit_runs_maskwatch_unprivileged_with_a_state_directory(unit: str) -> None:
    settings = unit_settings(DEPLOY / "systemd" / unit)
    exec_start = settings["ExecStart"][0].split()
    assert exec_start[0] == "/opt/maskwatch/venv/bin/maskwatch"
    # install.sh puts deploy/pi/<name> at /etc/maskwatch/<name>: parse with the shipped files in their place
    shipped = [
        str(DEPLOY / "pi" / arg.removeprefix("/etc/maskwatch/")) if arg.startswith("/etc/maskwatch/") else arg
        for arg in exec_start[1:]
    ]
    assert parse_cli(shipped).command == UNITS[unit]
    assert settings["Restart"] == ["on-failure"]
    assert settings.get("DynamicUser") == ["yes"] or settings.get("User") == ["maskwatch"]
    state = settings["StateDirectory"][0]
    assert all(arg.startswith(f"/var/lib/{state}/") for arg in exec_start if arg.startswith("/var/lib/"))
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "EnvironmentFile"):
        assert key in settings, f"{unit}: {key} missing"


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_analyze_accepts_the_unit(unit: str, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # the venv's maskwatch stands in for /opt/maskwatch/venv/bin/maskwatch, nothing else changes
    text = (
        (DEPLOY / "systemd" / unit)
        .read_text()
        .replace("/opt/maskwatch/venv/bin/maskwatch", str(Path(sys.executable).with_name("maskwatch")))
    )
    (tmp_path / unit).write_text(text)
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / unit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(tmp_path / unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert exposure, security.stdout + security.stderr
    assert float(exposure.group(1)) <= 2.5, security.stdout  # systemd calls <= 3.9 "OK"


def deployed_environment() -> dict[str, tuple[dict[str, str], tuple[type[BaseModel], ...]]]:
    """What each deployment file sets for maskwatch (systemd Environment=, Dockerfile ENV, compose),
    and the config models that then read it."""
    found: dict[str, tuple[dict[str, str], tuple[type[BaseModel], ...]]] = {}
    models = {"edge": (EdgeConfig,), "hub": (HubConfig,)}
    for unit, command in UNITS.items():
        values = unit_settings(DEPLOY / "systemd" / unit).get("Environment", [])
        found[unit] = (dict(value.split("=", 1) for value in values), models[command])
    env = next(c for c in dockerfile.parse_file(str(DOCKERFILE)) if c.cmd == "ENV").value
    image_env = dict(zip(env[::2], env[1::2], strict=True))
    found["Dockerfile"] = (image_env, (EdgeConfig, HubConfig))
    for name, svc in maskwatch_services().items():
        found[f"compose {name}"] = ({**image_env, **svc.get("environment", {})}, models[svc["command"][0]])
    return found


@pytest.mark.parametrize("where", sorted(deployed_environment()))
def test_deployed_environment_is_accepted_by_the_config_loaders(where: str) -> None:
    environ, models = deployed_environment()[where]
    assert environ, f"{where} sets no environment"
    # MASKWATCH_* variables become config keys unless they are known to be something else
    for model in models:
        load_config(model, environ=environ)


# -- Raspberry Pi examples and installer ------------------------------------------------


def dotted_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every option of a config tree, as dotted keys (sub-models expanded)."""
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        optional = get_args(field.annotation) if get_origin(field.annotation) in (Union, UnionType) else ()
        for arg in (field.annotation, *optional):  # a sub-model, or an optional one (not list items)
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                keys.extend(dotted_fields(arg, f"{prefix}{name}."))
    return keys


def documented(lines: list[str], i: int) -> bool:
    """Whether the key on line ``i`` has a comment: on its line, or above its group of keys."""
    if lines[i].lstrip().startswith("#") or "#" in lines[i].split(":", 1)[1]:
        return True
    indent = len(lines[i]) - len(lines[i].lstrip())
    j = i - 1
    while (
        j >= 0
        and lines[j].strip()
        and len(lines[j]) - len(lines[j].lstrip()) == indent
        and not lines[j].lstrip().startswith("#")
    ):
        j -= 1
    return j >= 0 and lines[j].lstrip().startswith("#")


@pytest.mark.parametrize(("example", "model"), [("edge.yaml", EdgeConfig), ("hub.yaml", HubConfig)])
def test_example_config_loads_and_documents_every_option(example: str, model: type[BaseModel]) -> None:
    path = DEPLOY / "pi" / example
    config = load_config(model, path, environ={})
    assert isinstance(config, model)
    lines = path.read_text().splitlines()
    for key in dotted_fields(model):
        name = key.rsplit(".", 1)[-1]
        depth = key.count(".")
        pattern = re.compile(rf"^ {{{2 * depth}}}{name}:")
        # a key may also be commented out: "  # tls:" / "  #   ca_certs:" read as if uncommented
        hits = [i for i, line in enumerate(lines) if pattern.match(re.sub(r"^(\s*)# ?", r"\1", line))]
        assert hits, f"{example}: option {key} is not in the example"
        assert documented(lines, hits[0]), f"{example}: {key} has no comment"


def leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


@pytest.mark.parametrize(
    ("example", "model", "marker"), [("edge.yaml", EdgeConfig, "Pi:"), ("hub.yaml", HubConfig, "Here:")]
)
def test_example_config_shows_the_defaults_unless_it_says_otherwise(
    example: str, model: type[BaseModel], marker: str
) -> None:
    path = DEPLOY / "pi" / example
    lines = path.read_text().splitlines()
    defaults = model().model_dump(mode="json")
    for key, value in leaves(yaml.safe_load(path.read_text())):
        default: Any = defaults
        for part in key.split("."):  # under an optional section that defaults to null, the default is null
            default = default[part] if isinstance(default, dict) else None
        name, depth = key.rsplit(".", 1)[-1], key.count(".")
        line = next(line for line in lines if re.match(rf"^ {{{2 * depth}}}{name}:", line))
        if marker not in line:
            assert value == default, f"{example}: {key} is {value!r}, the default is {default!r} (say '{marker}')"


def install_config(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(DEPLOY / "pi" / "install.sh"), "--config-only", "--destdir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_install_script_writes_a_tls_node_config(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    creds = tmp_path / "hq.door-7.env"
    creds.write_text("MASKWATCH_BROKER__USERNAME=hq/door-7\nMASKWATCH_BROKER__PASSWORD=mwsecret\n")
    proc = install_config(
        tmp_path,
        "--site",
        "hq",
        "--node",
        "door-7",
        "--broker",
        "broker.lan",
        "--ca",
        str(ca),
        "--credentials",
        str(creds),
    )
    assert proc.returncode == 0, proc.stderr
    etc = tmp_path / "etc" / "maskwatch"
    config = load_edge_config(etc / "edge.yaml")
    assert (config.site, config.node, config.source) == ("hq", "door-7", "picamera")
    assert (config.broker.host, config.broker.port) == ("broker.lan", 8883)
    assert config.broker.tls and config.broker.tls.ca_certs == Path("/etc/maskwatch/ca.crt")
    assert (etc / "ca.crt").read_text() == ca.read_text()
    assert read_env(etc / "edge.env")["MASKWATCH_BROKER__USERNAME"] == "hq/door-7"
    assert (etc / "edge.env").stat().st_mode & 0o077 == 0
    # a second run keeps the operator's edits
    (etc / "edge.yaml").write_text((etc / "edge.yaml").read_text().replace("threshold: null", "threshold: 0.7"))
    assert (
        install_config(
            tmp_path, "--site", "hq", "--node", "door-7", "--broker", "broker.lan", "--ca", str(ca)
        ).returncode
        == 0
    )
    assert load_edge_config(etc / "edge.yaml").threshold == 0.7


def test_install_script_writes_a_plain_usb_node_config(tmp_path: Path) -> None:
    proc = install_config(
        tmp_path, "--site", "lab", "--node", "cam-1", "--broker", "10.1.2.3:1884", "--plain", "--camera", "usb"
    )
    assert proc.returncode == 0, proc.stderr
    config = load_edge_config(tmp_path / "etc" / "maskwatch" / "edge.yaml")
    assert (config.source, config.broker.host, config.broker.port, config.broker.tls) == ("0", "10.1.2.3", 1884, None)


@pytest.mark.parametrize(
    "args",
    [
        ["--site", "HQ", "--node", "a", "--broker", "b", "--plain"],
        ["--site", "hq", "--node", "all", "--broker", "b", "--plain"],
        ["--site", "hq", "--node", "a", "--plain"],
        ["--site", "hq", "--node", "a", "--broker", "b"],
        ["--site", "hq", "--node", "a", "--broker", "b", "--plain", "--camera", "thermal"],
        ["--site", "hq", "--node", "a", "--broker", "b|x&y", "--plain"],
        ["--site", "hq", "--node", "a", "--broker", "b:port", "--plain"],
    ],
)
def test_install_script_rejects_bad_arguments_with_a_reason(args: list[str], tmp_path: Path) -> None:
    proc = install_config(tmp_path, *args)
    assert proc.returncode == 2 and proc.stderr.startswith("install.sh: "), proc.stderr
    assert not (tmp_path / "etc").exists()


def test_install_script_refuses_another_nodes_credentials(tmp_path: Path) -> None:
    creds = tmp_path / "hq.door-2.env"
    creds.write_text("MASKWATCH_BROKER__USERNAME=hq/door-2\nMASKWATCH_BROKER__PASSWORD=x\n")
    proc = install_config(
        tmp_path, "--site", "hq", "--node", "door-1", "--broker", "b", "--plain", "--credentials", str(creds)
    )
    assert proc.returncode == 2 and "not the login of hq/door-1" in proc.stderr


@pytest.mark.parametrize(
    "script",
    ["pi/install.sh", "mosquitto/make-users", "mosquitto/make-certs", "docker/entrypoint.sh", "docker/make-api-token"],
)
def test_shell_scripts_parse_and_are_executable(script: str) -> None:
    path = DEPLOY / script
    shell = "bash" if path.read_text().startswith("#!/bin/bash") else "sh"
    proc = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert path.stat().st_mode & 0o111
    if shutil.which("shellcheck"):
        check = subprocess.run(["shellcheck", "-s", shell, str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout


def test_broker_inflight_window_holds_a_whole_ingest_batch() -> None:
    """docs/hub.md: the hub acknowledges per batch, so the shipped broker lets at least one batch be in flight."""
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    [window] = re.findall(r"^max_inflight_messages (\d+)$", conf, re.M)
    assert int(window) == 0 or int(window) >= HubConfig().ingest.batch_size
    assert "at least `ingest.batch_size`" in (REPO / "docs" / "hub.md").read_text()
