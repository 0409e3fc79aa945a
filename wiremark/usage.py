"""What a user can get wrong on a command line, shared by the CLI and the commands it runs
(which never import the CLI): the error printed in one line without a traceback, and the
argument types that check values as they are parsed."""

from __future__ import annotations

import argparse


class UsageError(Exception):
    """A problem with what the user asked for; printed without a traceback."""


def models(text: str) -> tuple[str, ...]:
    """A comma-separated list of registered models."""
    from wiremark.servers.runner import models as registered

    known = registered()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {', '.join(unknown) or '(none given)'}: "
            f"choose from {', '.join(known)}"
        )
    return names


def swap(text: str) -> tuple[str, str]:
    """NAME=MODEL, two models of the same family."""
    from wiremark.payloads.contract import MODEL_FAMILIES

    name, _, model = text.partition("=")
    if not model or name not in MODEL_FAMILIES or model not in MODEL_FAMILIES:
        raise argparse.ArgumentTypeError(f"expected NAME=MODEL with known models, got {text!r}")
    if MODEL_FAMILIES[name] is not MODEL_FAMILIES[model]:
        raise argparse.ArgumentTypeError(f"{name} and {model} take different inputs")
    return name, model


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def positive_number(text: str) -> float:
    """A finite number > 0 (a duration)."""
    value = non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def non_negative(text: str) -> float:
    """A finite number >= 0 (an injected delay or CPU cost)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (0.0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value
