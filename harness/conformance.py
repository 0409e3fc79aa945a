"""`wiremark conform`: every model x transport against the in-process runner.

Inputs are fixed: all 150 iris rows (for `iris` and `iris_rf`), 500 MNIST test digits in
both pixel encodings, scikit-image's photos at three sizes. An answer conforms when class
ids are equal, probabilities within PROBABILITY_TOLERANCE, face boxes and landmarks equal
(the same bytes go in) and confidences within CONFIDENCE_TOLERANCE.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from wiremark.payloads import samples
from wiremark.payloads import transport as transports
from wiremark.payloads.contract import (
    MODEL_FAMILIES,
    Batch,
    Classes,
    Family,
    PixelEncoding,
    Prediction,
)
from wiremark.payloads.errors import WiremarkError

from .clients import Client, connect
from .tls import Trust

PROBABILITY_TOLERANCE = 1e-6
CONFIDENCE_TOLERANCE = 1e-6
MNIST_INPUTS = 500
BATCH = 50
FACE_SIZES = (160, 320, 512)


@dataclass
class Cell:
    model: str
    transport: str
    inputs: int = 0
    mismatches: list[str] = field(default_factory=list)
    worst: float = 0.0  # the largest probability or confidence deviation seen

    @property
    def passed(self) -> bool:
        return self.inputs > 0 and not self.mismatches


def encodings_of(family: Family, transport: transports.Transport) -> list[PixelEncoding]:
    """The encodings to check: MNIST's pixel encodings, and every family's when the
    transport has tensor encodings (binary and JSON tensors on the Open Inference
    Protocol), of those its server accepts."""
    if family is not Family.DIGITS and not transport.tensor_encodings:
        return [PixelEncoding.RAW]
    return [e for e in PixelEncoding if e in transport.encodings]


def cases(
    family: Family, encodings: Sequence[PixelEncoding] = (PixelEncoding.RAW,)
) -> Iterator[tuple[str, Batch, PixelEncoding]]:
    """(label, batch, encoding) for the family's fixed input set, in each of `encodings`
    (MNIST: both, unless told)."""
    if family is Family.TABULAR:
        rows, _ = samples.iris_rows()
        for encoding in encodings:
            for start in range(0, len(rows), BATCH):
                label = f"rows {start}-{start + BATCH - 1}"
                yield (
                    label if len(encodings) == 1 else f"{encoding} {label}",
                    rows[start : start + BATCH],
                    encoding,
                )
    elif family is Family.DIGITS:
        digits, _ = samples.mnist_digits(MNIST_INPUTS)
        for encoding in encodings:
            for start in range(0, len(digits), BATCH):
                batch = digits[start : start + BATCH]
                yield f"{encoding} digits {start}-{start + BATCH - 1}", batch, encoding
    else:
        for encoding in encodings:
            for image in samples.face_images(FACE_SIZES):
                label = image.image_id if len(encodings) == 1 else f"{encoding} {image.image_id}"
                yield label, [image], encoding


def compare(label: str, got: Prediction, want: Prediction, cell: Cell) -> None:
    if isinstance(want, Classes):
        assert isinstance(got, Classes)
        if got.probabilities.shape != want.probabilities.shape:
            cell.mismatches.append(
                f"{label}: shape {got.probabilities.shape} != {want.probabilities.shape}"
            )
            return
        wrong = np.flatnonzero(got.class_ids != want.class_ids)
        if wrong.size:
            cell.mismatches.append(f"{label}: class ids differ at {wrong[:5].tolist()}")
        deviation = float(np.abs(got.probabilities.astype(np.float64) - want.probabilities).max())
        cell.worst = max(cell.worst, deviation)
        if deviation > PROBABILITY_TOLERANCE:
            cell.mismatches.append(f"{label}: probabilities differ by {deviation:.2e}")
        return
    assert isinstance(got, list) and isinstance(want, list)
    for got_image, want_image in zip(got, want, strict=True):
        if len(got_image.faces) != len(want_image.faces):
            cell.mismatches.append(
                f"{label}: {len(got_image.faces)} faces, expected {len(want_image.faces)}"
            )
            continue
        for g, w in zip(got_image.faces, want_image.faces, strict=True):
            if g.box != w.box or g.landmarks != w.landmarks:
                cell.mismatches.append(f"{label}: box/landmarks {g.box} != {w.box}")
            deviation = abs(g.confidence - w.confidence)
            cell.worst = max(cell.worst, deviation)
            if deviation > CONFIDENCE_TOLERANCE:
                cell.mismatches.append(f"{label}: confidence differs by {deviation:.2e}")


def check(client: Client, model: str, reference: Any) -> Cell:
    cell = Cell(model, client.transport)
    family = MODEL_FAMILIES[model]
    for label, batch, encoding in cases(family, encodings_of(family, client.descriptor)):
        try:
            reply = client.predict(model, batch, encoding)
        except WiremarkError as exc:
            cell.mismatches.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        cell.inputs += len(batch)
        compare(label, reply.prediction, reference.predict(batch), cell)
    return cell


def conform(
    targets: dict[str, str],
    models: Sequence[str],
    progress: Any = None,
    references: Mapping[str, Any] | None = None,
    tls: Trust | None = None,
) -> list[Cell]:
    """Check every model on every target ({transport: host:port}) against the in-process
    runners (`references`: {model: runner}; built here when not given); over TLS, verifying
    every server, with a `Trust`."""
    if references is None:
        from wiremark.servers.runner import build_all

        references = build_all(models)[0]
    cells = []
    for transport, address in targets.items():
        with ExitStack() as stack:
            try:
                client = stack.enter_context(connect(transport, address, timeout=120, tls=tls))
            except WiremarkError as exc:  # no server there: every model fails, nothing is sent
                client, unreachable = None, f"{type(exc).__name__}: {exc}"
            for model in models:
                if not transports.get(transport).serves(model):
                    continue  # a peer serving only some models: the rest are not its to pass
                if client is None:
                    cells.append(Cell(model, transport, mismatches=[unreachable]))
                else:
                    cells.append(check(client, model, references[model]))
                if progress:
                    progress(cells[-1])
    return cells


def to_json(cells: list[Cell]) -> dict[str, Any]:
    return {
        "passed": all(c.passed for c in cells),
        "cells": [
            {k: v for k, v in asdict(c).items() if k != "mismatches"}
            | {"mismatches": len(c.mismatches), "passed": c.passed, "details": c.mismatches[:20]}
            for c in cells
        ],
    }


def table(cells: list[Cell]) -> str:
    lines = [f"{'model':<8} {'transport':<9} {'inputs':>6}  {'worst dev':>9}  result", "-" * 46]
    for c in cells:
        lines.append(
            f"{c.model:<8} {c.transport:<9} {c.inputs:>6}  {c.worst:>9.1e}  "
            + ("pass" if c.passed else f"FAIL ({len(c.mismatches)} mismatches)")
        )
    for c in cells:
        for m in c.mismatches[:10]:
            lines.append(f"  {c.model}/{c.transport}: {m}")
    return "\n".join(lines)


def parse_target(text: str) -> tuple[str, str]:
    transport, _, address = text.partition("=")
    names = transports.names(peers=True)
    if transport not in names or ":" not in address:
        raise argparse.ArgumentTypeError(
            f"expected TRANSPORT=HOST:PORT with a transport of {', '.join(names)}"
        )
    return transport, address


def add_target_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument(
        "--target",
        type=parse_target,
        action="append",
        default=[],
        metavar="TRANSPORT=HOST:PORT",
        help=help,
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    from wiremark.servers.runner import models
    from wiremark.usage import models as model_list

    p = sub.add_parser("conform", help="check every transport returns the in-process predictions")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    add_target_option(p, "check a running server (repeatable); without it wiremark starts all")
    p.add_argument("--models", type=model_list, default=models())
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .launch import ServerProcess, running

    def say(cell: Cell) -> None:
        verdict = "pass" if cell.passed else f"FAIL ({len(cell.mismatches)})"
        print(f"  {cell.model}/{cell.transport}: {cell.inputs} inputs, {verdict}", file=sys.stderr)

    with ExitStack() as stack:
        targets = dict(args.target)
        if not targets:
            models = ("--models", ",".join(args.models))
            procs = [ServerProcess(t, models) for t in transports.names()]
            stack.enter_context(running(procs))
            targets = {p.transport: p.address for p in procs}
        print(
            f"wiremark conform: {', '.join(args.models)} on {', '.join(targets)}", file=sys.stderr
        )
        cells = conform(targets, args.models, progress=say)
    verdict = to_json(cells)
    print(json.dumps(verdict, indent=2) if args.json else table(cells))
    return 0 if verdict["passed"] else 1
