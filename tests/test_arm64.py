"""The edge on the Raspberry Pi's architecture: the wheel built from this checkout, in Debian arm64 under qemu.

The wheel and its ``edge`` extra, resolved to aarch64 wheels, are installed in a cached Debian bookworm
arm64 root (tests/arm64_root.py). There, through the ``maskwatch`` command only, the committed classifiers
and both face detectors run on a fixed set of scene photos, and an edge node delivers a folder of them with
``--once`` to this session's Mosquitto; the same commands run on this machine, and both must agree face by
face. qemu emulates a Pi's core (Cortex-A72, and A76 for one detector; see ``arm64_root.CPU``). Emulation
says nothing about speed on a Pi; these tests check correctness only.

Needs root and qemu-user-static (tests/run installs it as root); otherwise every test here is skipped with
the reason. Select them with ``-m arm64``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jsonschema
import pytest
import yaml
from arm64_root import (
    CPU,
    VENV,
    Session,
    aarch64_wheels,
    base_root,
    build_wheel,
    checked,
    emulation_problem,
    mirror_problem,
    remove_tree,
    requires_dist,
    venv_layer,
)
from conftest import REPO, SCENES, need
from polling import unique_site, wait_until

if TYPE_CHECKING:  # the broker fixture's type only: these tests use the product through its command line
    from devsite.broker import LocalMosquitto

pytestmark = [pytest.mark.arm64, pytest.mark.timeout(3600)]

#: Scene photos where the near profile finds several faces, with and without masks.
PHOTOS = (
    "maksssksksss209.jpg",
    "maksssksksss296.jpg",
    "maksssksksss760.jpg",
    "maksssksksss327.jpg",
    "maksssksksss361.jpg",
    "maksssksksss401.jpg",
)
#: A face found on both architectures: its boxes overlap at least this much (intersection over union).
MIN_IOU = 0.9
#: The largest difference allowed between the two architectures' scores (face score and label probability).
SCORE_TOLERANCE = 0.02
#: (profile, detector, emulated CPU) run with every committed classifier: the Pi 4's and the Pi 5's cores.
#: (The crowd profile's tiled detector takes about 100 s per photo under emulation, so it is not run here.)
DETECTORS = (
    ("near", "blazeface", "cortex-a72"),
    ("near", "blazeface", "cortex-a76"),
    ("near", "res10", "cortex-a72"),
)
EXTRA = "edge"
#: The committed classifiers compared with each other on each architecture (the export's int8 check).
INT8, FLOAT16 = "mask_classifier_int8", "mask_classifier_f16"
ARM_PHOTOS = "/photos"
ARM_MODELS = "/models"
ARM_CLASSIFIERS = "/classifiers"


@dataclass(frozen=True)
class Build:
    """The cached arm64 root, this checkout's wheel and the cached aarch64 wheels of its edge extra."""

    root: Path
    dist: Path
    wheel: Path
    wheels: Path


@dataclass(frozen=True)
class Arm64:
    """An arm64 session with the checkout's wheel installed, and the folders bound into it."""

    session: Session
    binds: dict[Path, str]
    env: dict[str, str]

    def maskwatch(self, *args: str, cpu: str = CPU, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
        """Run the installed ``maskwatch`` with ``args`` on the emulated ``cpu``."""
        env = {**self.env, "QEMU_CPU": cpu}
        return self.session.run([f"{VENV}/bin/maskwatch", *args], binds=self.binds, env=env, timeout=timeout)


def host_maskwatch() -> str:
    """The ``maskwatch`` command of the test venv (tests/run puts it first on PATH)."""
    found = shutil.which("maskwatch") or str(Path(sys.executable).with_name("maskwatch"))
    if not Path(found).exists():
        pytest.fail("maskwatch is not installed in the test venv: run 'bash tests/run'")
    return found


def detector_folder() -> Path:
    """The folder of the verified third-party detector files, as ``maskwatch model fetch`` reports it."""
    result = checked(
        subprocess.run([host_maskwatch(), "model", "fetch"], capture_output=True, text=True, timeout=600, check=False),
        "maskwatch model fetch",
    )
    last = result.stdout.strip().splitlines()[-1]
    return Path(last.split(" ready in ", 1)[1])


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with copies of :data:`PHOTOS` (also the edge node's source)."""
    images = need(SCENES / "images")
    folder = tmp_path_factory.mktemp("photos")
    folder.chmod(0o755)  # the installed service's user reads it too (pytest makes its folders 0700)
    for name in PHOTOS:
        shutil.copy2(images / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """Skip when arm64 programs cannot run here; else the cached root and wheels, and a fresh wheel."""
    problem = emulation_problem() or mirror_problem()
    if problem is not None:
        pytest.skip(problem)
    root = base_root()
    dist = tmp_path_factory.mktemp("dist")
    wheel = build_wheel(REPO, dist)
    return Build(root, dist, wheel, aarch64_wheels([f"{wheel}[{EXTRA}]"], root, requires_dist(wheel, EXTRA)))


@pytest.fixture(scope="module")
def arm64(build: Build, tmp_path_factory: pytest.TempPathFactory, photos: Path) -> Arm64:
    """The root with this checkout's wheel installed offline from the cached aarch64 wheels."""
    session = Session([venv_layer(build.root, build.wheels), build.root], tmp_path_factory.mktemp("arm64"))
    checked(
        session.run(
            [
                f"{VENV}/bin/pip",
                "install",
                "-q",
                "--no-index",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--find-links",
                "/wheels",
                f"/dist/{build.wheel.name}[{EXTRA}]",
            ],
            binds={build.wheels: "/wheels", build.dist: "/dist"},
        ),
        "pip install (arm64)",
    )
    return Arm64(
        session,
        {photos: ARM_PHOTOS, detector_folder(): ARM_MODELS, REPO / "models": ARM_CLASSIFIERS},
        {"MASKWATCH_MODEL_DIR": ARM_MODELS},
    )


def iou(a: list[int], b: list[int]) -> float:
    """Intersection over union of two ``[x, y, w, h]`` boxes."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(0, width) * max(0, height)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0


#: The scores compared face by face, when a run reports them (``edge`` events carry no detector score).
#: (A null ``face_score`` in an event is not compared.)
SCORES = ("score", "face_score", "detector_score")


@dataclass
class Agreement:
    """How far two runs over the same photos are apart; :attr:`problems` lists every disagreement.

    :param tolerance: the largest score difference that is no problem (:data:`SCORE_TOLERANCE`; ``1.0`` when
        only reporting, e.g. int8 against float16).
    """

    tolerance: float = SCORE_TOLERANCE
    faces: int = 0
    same_label: int = 0
    min_iou: float = 1.0

    def __post_init__(self) -> None:
        self.problems: list[str] = []
        self.max_diff = dict.fromkeys(SCORES, 0.0)

    def compare(self, where: str, ours: list[dict], theirs: list[dict]) -> None:
        """Pair the faces of one image by box overlap and check box, label and scores of each pair."""
        left = list(theirs)
        for face in ours:
            best = max(left, key=lambda other: iou(face["box"], other["box"]), default=None)
            overlap = iou(face["box"], best["box"]) if best else 0.0
            if best is None or overlap < MIN_IOU:
                self.problems.append(f"{where}: face {face} has no twin (best IoU {overlap:.3f})")
                continue
            left.remove(best)
            self.faces += 1
            self.min_iou = min(self.min_iou, overlap)
            self.same_label += face["label"] == best["label"]
            if face["label"] != best["label"]:
                self.problems.append(f"{where}: {face['label']} {face['score']} but {best['label']} {best['score']}")
            for score in SCORES:
                if face.get(score) is not None:
                    diff = abs(face[score] - best[score])
                    self.max_diff[score] = max(self.max_diff[score], diff)
                    if diff > self.tolerance:
                        self.problems.append(f"{where}: {score} {face[score]} but {best[score]}")
        self.problems += [f"{where}: face {face} has no twin" for face in left]

    def summary(self) -> str:
        """The figures in one line (printed by the tests, quoted in docs/deploy.md and the model card)."""
        diffs = ", ".join(f"{score} {diff:.4f}" for score, diff in self.max_diff.items())
        return (
            f"{self.faces} faces paired, same label {self.same_label}/{self.faces}, min IoU {self.min_iou:.4f}, "
            f"max difference: {diffs}"
        )


def by_image(output: str) -> dict[str, list[dict]]:
    """``maskwatch detect --json`` lines -> faces per image file name."""
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    return {Path(line["image"]).name: line["faces"] for line in lines}


def classifiers() -> list[Path]:
    """Every committed classifier model."""
    found = sorted((REPO / "models").glob("*.tflite"))
    assert found, "no committed classifier in models/"
    return found


def test_same_litert_on_both_architectures(arm64: Arm64) -> None:
    """Both architectures run the same ai-edge-litert (the pin in pyproject.toml has wheels for both)."""
    script = "from importlib.metadata import version; print(version('ai-edge-litert'))"
    ours = checked(
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60),
        "x86 version",
    ).stdout.strip()
    theirs = checked(arm64.session.run([f"{VENV}/bin/python", "-c", script]), "arm64 version").stdout.strip()
    assert ours == theirs, f"ai-edge-litert {ours} on x86 but {theirs} on arm64"
    machine = checked(arm64.session.run(["uname", "-m"]), "uname").stdout.strip()
    assert machine == "aarch64"


@pytest.mark.parametrize(("profile", "detector", "cpu"), DETECTORS)
def test_detect_agrees_with_x86(arm64: Arm64, photos: Path, profile: str, detector: str, cpu: str) -> None:
    """``maskwatch detect`` gives the same faces, labels and scores on arm64 as on x86, for every classifier.

    Also prints the export's comparison (int8 against float16, face by face) on each architecture: the
    quantized model must keep its agreement with the float one on the Pi's architecture too.
    """
    agreement = Agreement()
    host, emulated = "x86_64", f"aarch64 ({cpu})"
    runs: dict[str, dict[str, dict[str, list[dict]]]] = {host: {}, emulated: {}}
    for model in classifiers():
        options = ["--json", "--profile", profile, "--detector", detector]
        x86 = checked(
            subprocess.run(
                [host_maskwatch(), "detect", *options, "--model", str(model), str(photos)],
                capture_output=True,
                text=True,
                check=False,
                timeout=600,
            ),
            "x86 detect",
        )
        arm = checked(
            arm64.maskwatch("detect", *options, "--model", f"{ARM_CLASSIFIERS}/{model.name}", ARM_PHOTOS, cpu=cpu),
            "arm64 detect",
        )
        ours, theirs = by_image(x86.stdout), by_image(arm.stdout)
        assert sorted(ours) == sorted(theirs) == sorted(PHOTOS)
        runs[host][model.stem], runs[emulated][model.stem] = ours, theirs
        for name in PHOTOS:
            agreement.compare(f"{model.name} {name}", ours[name], theirs[name])
    print(f"\n{profile}/{detector}, {host} vs {emulated}: {agreement.summary()}")
    assert agreement.faces > 0, "no face found in the photos: nothing was compared"
    assert not agreement.problems, "\n".join(agreement.problems)
    quantized = {}
    for machine, by_model in runs.items():
        quantized[machine] = Agreement(tolerance=1.0)
        for name in PHOTOS:
            quantized[machine].compare(name, by_model[INT8][name], by_model[FLOAT16][name])
        print(f"{profile}/{detector}, int8 vs float16 on {machine}: {quantized[machine].summary()}")
    assert quantized[host].same_label == quantized[emulated].same_label


def events_of(lines: list[str], site: str, node: str, schema: dict) -> list[dict]:
    """Event messages of one node among ``mosquitto_sub -F '%t %x'`` lines (topic, hex payload), schema-checked."""
    events = []
    for line in lines:
        topic, _, payload = line.strip().partition(" ")
        segments = topic.split("/")
        if site not in segments or node not in segments:
            continue
        try:
            message = json.loads(bytes.fromhex(payload))
        except ValueError:
            continue  # a snapshot's JPEG bytes
        if isinstance(message, dict) and message.get("type") in {"new", "update", "end"}:
            jsonschema.validate(message, schema)
            events.append(message)
    return events


def test_edge_once_delivers_the_same_events(
    arm64: Arm64, photos: Path, mosquitto: LocalMosquitto, tmp_path: Path
) -> None:
    """``maskwatch edge --once`` on arm64 publishes the events the x86 node publishes for the same photos."""
    site = unique_site("arm")
    schema = json.loads((REPO / "docs" / "schemas" / "event.json").read_text())
    broker = ["-h", mosquitto.host, "-p", str(mosquitto.port)]
    subscriber = subprocess.Popen(
        ["mosquitto_sub", *broker, "-q", "1", "-t", "#", "-F", "%t %x"], stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(subscriber.stdout or ()), daemon=True)
    reader.start()

    def marked(marker: str) -> bool:
        """Publish ``marker`` (a topic); whether the subscriber has received it (so also all before it)."""
        subprocess.run(["mosquitto_pub", *broker, "-q", "1", "-t", marker, "-m", "1"], check=True, timeout=10)
        return any(line.startswith(marker + " ") for line in list(lines))

    try:
        assert wait_until(lambda: marked(f"{site}/subscribed"), timeout=20, every=0.5), "mosquitto_sub never subscribed"
        # No hub in this test: the broker's PUBACK acknowledges an event (a site without a hub).
        common = ["edge", "--once", "--site", site, "--broker", f"{mosquitto.host}:{mosquitto.port}"]
        common += ["--set", "delivery=broker"]
        x86 = subprocess.run(
            [
                host_maskwatch(),
                *common,
                "--node",
                "amd64",
                "--source",
                str(photos),
                "--outbox",
                str(tmp_path / "outbox.sqlite"),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        arm = arm64.maskwatch(*common, "--node", "arm64", "--source", ARM_PHOTOS, "--outbox", "/tmp/outbox.sqlite")
        assert x86.returncode == 0, x86.stderr[-3000:]
        assert arm.returncode == 0, arm.stderr[-3000:]
        assert wait_until(lambda: marked(f"{site}/done"), timeout=20, every=0.5)
    finally:
        subscriber.terminate()
        subscriber.wait(timeout=10)
        reader.join(timeout=10)
    ours, theirs = events_of(lines, site, "amd64", schema), events_of(lines, site, "arm64", schema)
    assert ours, "the x86 node published no event"
    for events in (ours, theirs):
        started = {e["id"] for e in events if e["type"] == "new"}
        ended = {e["id"] for e in events if e["type"] == "end"}
        assert started == ended, "every face of a still gives 'new' then 'end'"
        assert {e["frame"] for e in events} <= set(PHOTOS)
    agreement = Agreement()
    for name in PHOTOS:
        agreement.compare(
            f"edge {name}",
            [e for e in ours if e["type"] == "new" and e["frame"] == name],
            [e for e in theirs if e["type"] == "new" and e["frame"] == name],
        )
    print(f"edge --once: {agreement.summary()}")
    assert agreement.faces == len([e for e in ours if e["type"] == "new"])
    assert not agreement.problems, "\n".join(agreement.problems)


@pytest.mark.slow
def test_pi_install_script_end_to_end(build: Build, photos: Path, mosquitto: LocalMosquitto, tmp_path: Path) -> None:
    """deploy/pi/install.sh --no-start --camera usb in a fresh arm64 root: apt, user, venv, config, models, unit.

    Offline pip (the cached aarch64 wheels, lgpio from PyPI's wheel since Debian lacks python3-lgpio) and
    detector files copied into /var/lib/maskwatch/models beforehand (the guide's way for a Pi without internet;
    'model fetch' then only verifies them). Then the installed node runs once as the service user.
    """
    lgpio = aarch64_wheels(["lgpio"], build.root, "lgpio")
    session = Session([build.root], tmp_path / "root")
    try:
        check_install(session, build, lgpio, photos, mosquitto)
    finally:
        remove_tree(tmp_path / "root")  # a venv and apt's lists: too big to leave to pytest's kept temp folders


def check_install(session: Session, build: Build, lgpio: Path, photos: Path, mosquitto: LocalMosquitto) -> None:
    """Run install.sh in ``session`` and check what it installed."""
    binds = {
        REPO: "/src",
        build.dist: "/dist",
        build.wheels: "/wheels",
        lgpio: "/wheels-lgpio",
        detector_folder(): "/seed",
        photos: ARM_PHOTOS,
    }
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/wheels /wheels-lgpio", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    broker = f"{mosquitto.host}:{mosquitto.port}"
    script = (
        "install -d /var/lib/maskwatch/models && cp /seed/* /var/lib/maskwatch/models/ && "
        '/src/deploy/pi/install.sh --site hq --node pi-1 --broker "$1" --plain --camera usb --no-start '
        '--spec "$2"'
    )
    installed = session.run(
        ["sh", "-c", script, "sh", broker, f"/dist/{build.wheel.name}[{EXTRA}]"], binds=binds, env=env, timeout=2400
    )
    assert installed.returncode == 0, installed.stdout[-4000:] + installed.stderr[-4000:]
    assert "python3-lgpio is not in this apt archive" in installed.stdout
    assert "systemd is not running here: the unit is enabled" in installed.stdout
    assert "==> done: node hq/pi-1" in installed.stdout

    def inside(*command: str, user: bool = False) -> subprocess.CompletedProcess[str]:
        run_as = ["runuser", "-u", "maskwatch", "--"] if user else []
        return session.run([*run_as, *command], binds=binds, env={"MASKWATCH_MODEL_DIR": "/var/lib/maskwatch/models"})

    etc = session.upper / "etc"
    config = yaml.safe_load((etc / "maskwatch" / "edge.yaml").read_text())
    assert (config["site"], config["node"], config["source"]) == ("hq", "pi-1", "0")
    assert config["broker"]["host"] == mosquitto.host and config["broker"]["port"] == mosquitto.port
    assert config["broker"]["tls"] is None
    assert (etc / "maskwatch" / "edge.env").stat().st_mode & 0o777 == 0o600
    unit = etc / "systemd" / "system" / "maskwatch-edge.service"
    assert unit.read_text() == (REPO / "deploy" / "systemd" / "maskwatch-edge.service").read_text()
    assert inside("systemctl", "is-enabled", "maskwatch-edge.service").stdout.strip() == "enabled"
    verify = inside("systemd-analyze", "verify", "/etc/systemd/system/maskwatch-edge.service")
    assert verify.returncode == 0, verify.stderr
    assert "video" in inside("id", "-nG", "maskwatch").stdout.split()
    venv = "/opt/maskwatch/venv"
    assert "include-system-site-packages = true" in (session.upper / venv[1:] / "pyvenv.cfg").read_text()
    imports = inside(f"{venv}/bin/python", "-c", "import lgpio, gpiozero, cv2, ai_edge_litert; print('ok')")
    assert imports.stdout.strip() == "ok", imports.stderr
    help_text = inside(f"{venv}/bin/maskwatch", "edge", "--help")
    assert help_text.returncode == 0 and "--once" in help_text.stdout, help_text.stderr
    # The service's command line, as its user, once over the photos; mock pins (no GPIO chip under emulation).
    node = inside(
        f"{venv}/bin/maskwatch",
        "edge",
        "--config",
        "/etc/maskwatch/edge.yaml",
        "--outbox",
        "/var/lib/maskwatch/outbox.sqlite",
        "--once",
        "--source",
        ARM_PHOTOS,
        "--set",
        "pin_factory=mock",
        "--set",
        "delivery=broker",
        user=True,
    )
    assert node.returncode == 0, node.stderr[-4000:]
