"""Face detection: MTCNN from the `mtcnn` package, whose weights ship in its wheel."""

from __future__ import annotations

import numpy as np

from wiremark.payloads.contract import EncodedImage, Face, Family, ImageFaces
from wiremark.payloads.errors import InvalidInput

from .runner import Runner

ORDER = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


class FaceMTCNN(Runner):
    name = "face"
    family = Family.FACES
    kind = "detector"
    input_spec = "encoded images (JPEG, PNG, GIF, BMP or WebP bytes), each with an image_id"
    output_spec = "per image: faces, each a box [x, y, width, height], 5 landmarks and a confidence"
    offload = True
    max_batch = 16

    def __init__(self, device: str) -> None:
        super().__init__(device)
        import tensorflow as tf
        from mtcnn import MTCNN

        self._tf = tf
        # MTCNN takes its device explicitly ("GPU:0"); it does not follow tf.device().
        self._mtcnn = MTCNN(device=device.lstrip("/"))

    def predict(self, batch: list[EncodedImage]) -> list[ImageFaces]:  # type: ignore[override]
        # One image at a time: a face's box must not depend on which images share its batch
        # (MTCNN pads a batch to its largest image).
        return [ImageFaces(image.image_id, self._detect(image, i)) for i, image in enumerate(batch)]

    def _detect(self, image: EncodedImage, index: int) -> tuple[Face, ...]:
        # The codec checked the header (format, size, --max-image-pixels) before this.
        tf = self._tf
        try:
            pixels = tf.io.decode_image(image.data, channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, ValueError):
            raise InvalidInput(
                "not a decodable image (JPEG, PNG, GIF, BMP or WebP)", f"instances[{index}].image"
            ) from None
        found = self._mtcnn.detect_faces(pixels)
        return tuple(
            Face(
                box=tuple(int(v) for v in f["box"]),  # type: ignore[arg-type]
                landmarks=tuple(
                    (int(f["keypoints"][n][0]), int(f["keypoints"][n][1])) for n in ORDER
                ),
                confidence=float(np.float32(f["confidence"])),
            )
            for f in found
        )

    def sample(self) -> list[EncodedImage]:
        from wiremark.payloads.samples import face_images

        return face_images(sizes=(160,))[:1]
