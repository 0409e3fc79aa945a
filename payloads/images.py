"""Encoded images checked from their headers, before anything decodes them.

A decoder allocates what the header declares: a 1 MB PNG of one colour can declare
20000 x 20000 pixels and take 24 GB to decode. So the server reads the format and the size
from the header (Pillow's lazy `Image.open`, which decodes no pixel) and refuses, naming
the field, an image in a format it does not document, smaller than the face detector can
see, or with more pixels than `--max-image-pixels`.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from .contract import EncodedImage
from .errors import InvalidInput

# The formats the face model documents (Pillow's names); nothing else is even opened.
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
MIN_SIDE = 12  # MTCNN's smallest window


def check_image(data: bytes, field: str, max_pixels: int) -> None:
    """Raise InvalidInput (naming `field`) unless `data` is an image the server may decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # Pillow warns of bombs; the ceiling here is lower
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                width, height = image.size
    except Image.DecompressionBombError:  # so large that Pillow refuses to say how large
        declared = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise InvalidInput(
            f"image declares more than {declared:,} pixels, above the limit of {max_pixels:,} "
            "(--max-image-pixels)",
            field,
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InvalidInput(f"not a decodable image (send {', '.join(FORMATS)})", field) from None
    if width * height > max_pixels:
        raise InvalidInput(
            f"image of {width}x{height} = {width * height:,} pixels, above the limit of "
            f"{max_pixels:,} (--max-image-pixels)",
            field,
        )
    if min(width, height) < MIN_SIDE:
        raise InvalidInput(f"image smaller than {MIN_SIDE}x{MIN_SIDE} pixels", field)


def encoded_images(
    blobs: np.ndarray, ids: np.ndarray | None, field: str, id_field: str, max_pixels: int
) -> list[EncodedImage]:
    """A batch's image tensor (one bytes element per image, [N]) and its optional ids
    tensor (UTF-8 bytes, [N]; None: numbered from 0) -> the images the face model takes,
    each checked from its header."""
    images = []
    for i, blob in enumerate(blobs):
        item = f"{field}[{i}]"
        if not blob:
            raise InvalidInput("empty image", item)
        check_image(blob, item, max_pixels)
        image_id = str(i)
        if ids is not None:
            try:
                image_id = ids[i].decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput("ids must be UTF-8", f"{id_field}[{i}]") from None
        images.append(EncodedImage(image_id, bytes(blob)))
    return images
