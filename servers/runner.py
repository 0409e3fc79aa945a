"""The one interface every model implements, and the registry that builds them by name.

A runner is built once per process: it loads its artefact, compiles its inference path
(a `tf.function` with a fixed input signature, never `model.predict()` on the request
path) and warms up. `predict(batch)` takes the decoded batch from `wiremark.payloads` and
returns the prediction type of its family; bad input raises `InvalidInput`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar

from wiremark.payloads import transport as transports
from wiremark.payloads.contract import (
    DEFAULT_MAX_BATCH,
    MODEL_FAMILIES,
    Batch,
    Family,
    Prediction,
)

log = logging.getLogger(__name__)

ARTEFACTS = Path(__file__).resolve().parent / "artefacts"


class Runner(ABC):
    name: ClassVar[str]
    family: ClassVar[Family]
    kind: ClassVar[str] = "classifier"
    input_spec: ClassVar[str]
    output_spec: ClassVar[str]
    runtime_package: str = "tensorflow-cpu"  # reported in metadata with its version
    # Slow models run in a worker thread so the server's event loop keeps answering health
    # checks and fast models meanwhile; fast ones run inline, which is cheaper on one core.
    offload: ClassVar[bool] = False
    max_batch: ClassVar[int] = DEFAULT_MAX_BATCH
    uses_tensorflow: ClassVar[bool] = True  # a runner that does not needs no device set-up

    def __init__(self, device: str) -> None:
        self.device = device

    @abstractmethod
    def predict(self, batch: Batch) -> Prediction: ...

    @abstractmethod
    def sample(self) -> Batch:
        """A small, valid batch for warm-up."""

    def warmup(self, calls: int = 3) -> float:
        """Run the compiled path a few times; returns the last call's latency in ms."""
        batch = self.sample()
        elapsed = 0.0
        for _ in range(calls):
            start = time.perf_counter()
            self.predict(batch)
            elapsed = (time.perf_counter() - start) * 1000.0
        return elapsed

    def metadata(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "family": str(self.family),
            "runtime": f"{self.runtime_package} {_version(self.runtime_package)}",
            "device": self.device,
            "input": self.input_spec,
            "output": self.output_spec,
            "max_batch": self.max_batch,
            "versions": dict(versions()),
        }


def _version(package: str) -> str:
    for name in (package, package.replace("-cpu", "")):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


# what a model server reports in its metadata (bench adds the load side's packages)
SERVER_PACKAGES = (
    "tensorflow-cpu",
    "keras",
    "scikit-learn",
    "mtcnn",
    "numpy",
    "grpcio",
    "protobuf",
    "fastapi",
    "uvicorn",
)


@functools.cache  # package versions do not change while the process runs
def versions(packages: tuple[str, ...] = SERVER_PACKAGES) -> dict[str, str]:
    """Installed versions by package name ("unknown" where missing), the one look-up of
    them here: TensorFlow's CPU wheel is reported as tensorflow."""
    return {p.replace("-cpu", ""): _version(p) for p in packages}


def _iris() -> type[Runner]:
    from .iris import IrisMLP

    return IrisMLP


def _iris_rf() -> type[Runner]:
    from .iris import IrisForest

    return IrisForest


def _mnist() -> type[Runner]:
    from .mnist import MnistCNN

    return MnistCNN


def _face() -> type[Runner]:
    from .face import FaceMTCNN

    return FaceMTCNN


# Imported lazily: a server with --models iris_rf never imports MTCNN.
REGISTRY: dict[str, Callable[[], type[Runner]]] = {
    "iris": _iris,
    "iris_rf": _iris_rf,
    "mnist": _mnist,
    "face": _face,
}
MODELS = tuple(REGISTRY)  # the models that ship with wiremark


def register(name: str, family: Family, loader: Callable[[], type[Runner]]) -> None:
    """Add a model (from a plugin: see `payloads/transport.py`): its wire family, which
    clients look up, and the loader of its runner class, which servers build."""
    MODEL_FAMILIES[name] = family
    REGISTRY[name] = loader


def models() -> tuple[str, ...]:
    """Every registered model, plugins' included."""
    transports.load_plugins()
    return tuple(REGISTRY)


def build(name: str, device: str) -> Runner:
    if name not in models():
        raise KeyError(f"unknown model {name!r}: choose from {', '.join(REGISTRY)}")
    start = time.perf_counter()
    runner = REGISTRY[name]()(device)
    warm_ms = runner.warmup()
    log.info(
        "loaded %s on %s in %.1f s (warm call %.2f ms)",
        name,
        device,
        time.perf_counter() - start,
        warm_ms,
    )
    return runner


def build_all(names: Iterable[str], request: str = "cpu") -> tuple[dict[str, Runner], str]:
    """Build `names` in this process on the device asked for (`--device`); TensorFlow is
    configured (and imported) only when one of them needs it. (runners, device used)"""
    from .device import CPU, configure

    names = list(names)
    known = [n for n in names if n in models()]  # build() names an unknown one
    # a GPU asked for is checked (a clear error without one) whatever the models
    needs_tf = request != "cpu" or any(REGISTRY[n]().uses_tensorflow for n in known)
    device = configure(request) if needs_tf else CPU
    return {n: build(n, device) for n in names}, device
