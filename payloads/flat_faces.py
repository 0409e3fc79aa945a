"""A face detector's ragged answer as flat tensors, and back: what `tfs-grpc` and the Open
Inference Protocol transports carry, since no tensor holds "any number of faces per image".

`image_id` [N] (one per input image), then per face `face_image` (which input it was found
in), `box` [F,4] (x, y, width, height), `landmarks` [F,5,2] and `confidence` [F], as TF
Serving's detection models give them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .contract import LANDMARKS, Face, ImageFaces


def flatten(prediction: list[ImageFaces]) -> dict[str, np.ndarray]:
    faces = [(i, f) for i, image in enumerate(prediction) for f in image.faces]
    return {
        "image_id": np.array([image.image_id.encode() for image in prediction], dtype=object),
        "face_image": np.array([i for i, _ in faces], dtype=np.int32),
        "box": np.array([f.box for _, f in faces], dtype=np.int32).reshape(-1, 4),
        "landmarks": np.array([f.landmarks for _, f in faces], dtype=np.int32).reshape(
            -1, len(LANDMARKS), 2
        ),
        "confidence": np.array([f.confidence for _, f in faces], dtype=np.float32),
    }


def unflatten(out: Mapping[str, np.ndarray]) -> list[ImageFaces]:
    """The tensors `flatten` makes -> the runner's answer (KeyError, IndexError, ValueError
    or TypeError when they are not such tensors)."""
    images: list[list[Face]] = [[] for _ in out["image_id"]]
    for i, box, marks, confidence in zip(
        out["face_image"], out["box"], out["landmarks"], out["confidence"], strict=True
    ):
        images[int(i)].append(
            Face(
                box=tuple(int(v) for v in box),  # type: ignore[arg-type]
                landmarks=tuple((int(x), int(y)) for x, y in marks),
                confidence=float(np.float32(confidence)),
            )
        )
    return [
        ImageFaces(bytes(image_id).decode(), tuple(faces))
        for image_id, faces in zip(out["image_id"], images, strict=True)
    ]
