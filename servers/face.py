"""Face detection: MTCNN from the `mtcnn` package, whose weights ship in its wheel."""

from __future__ import annotations

import numpy as np

from wiremark.payloads.contract import EncodedImage, Face, Family, ImageFaces
from wiremark.payloads.errors import InvalidInput

from .runner import Runner

ORDER = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

# The longest side MTCNN sees. A larger image is scaled down to it for detection and the
# faces scaled back up. TensorFlow's oneDNN allocator keeps a pool as large as the largest
# image's working set and never gives it back: an 8-megapixel image left a server 719 MB
# larger for good, a 1600x1200 one 163 MB (scripts/image_memory.py), so the cap bounds what
# any image can make a server hold. The price: a face in a larger image must be MTCNN's
# minimum (20 px) at the scaled size, e.g. 52 px wide in a 4096-pixel-wide photo.
MAX_SIDE = 1600


class FaceMTCNN(Runner):
    name = "face"
    family = Family.FACES
    kind = "detector"
    input_spec = (
        "encoded images (JPEG, PNG, GIF, BMP or WebP bytes), each with an image_id; "
        f"detected at most {MAX_SIDE} pixels on the longest side (larger ones scaled down)"
    )
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
        height, width = int(pixels.shape[0]), int(pixels.shape[1])
        scale = max(height, width) / MAX_SIDE
        if scale > 1:  # detect on the image scaled down to MAX_SIDE, faces scaled back up
            size = (max(1, round(height / scale)), max(1, round(width / scale)))
            pixels = tf.cast(tf.image.resize(pixels, size, antialias=True), tf.uint8)
        else:
            scale = 1.0
        found = self._mtcnn.detect_faces(pixels)

        def up(value: float) -> int:
            return int(value * scale)

        return tuple(
            Face(
                box=tuple(up(v) for v in f["box"]),  # type: ignore[arg-type]
                landmarks=tuple(
                    (up(f["keypoints"][n][0]), up(f["keypoints"][n][1])) for n in ORDER
                ),
                confidence=float(np.float32(f["confidence"])),
            )
            for f in found
        )

    def sample(self) -> list[EncodedImage]:
        from wiremark.payloads.samples import face_images

        return face_images(sizes=(160,))[:1]
