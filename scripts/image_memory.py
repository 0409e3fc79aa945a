"""How much memory a face server holds after large images: its RSS before, during and after
N images at the size limit (issue: "memory held after a large image goes back").

    python scripts/image_memory.py [--transport json] [--images 100] [--pixels 8388608]
        [--server-arg=--max-image-pixels=8388608 ...]

Starts `wiremark serve` with the face model, sends one small photo to warm it, then N JPEG
photos (scikit-image's astronaut, resized) of `--pixels` pixels (4:3; with `--vary`, each 8
pixels narrower and shorter than the last: a new shape every time) one at a time, and
prints the server's RSS (its whole process tree) every tenth image, its peak (VmHWM), and
the growth from the warm server to the end. Each image is checked to get a reply.
"""

from __future__ import annotations

import argparse
import io
import math
import time

import psutil


def photo(pixels: int, smaller: int = 0) -> bytes:
    """A 4:3 JPEG of at most `pixels` pixels, `smaller` columns and rows short of it."""
    from PIL import Image
    from skimage import data

    width = int(math.sqrt(pixels * 4 / 3)) - smaller
    height = pixels // (width + smaller) - smaller
    image = Image.fromarray(data.astronaut()).convert("RGB").resize((width, height))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    tree = [proc, *proc.children(recursive=True)]
    return sum(p.memory_info().rss for p in tree) / 2**20


def peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return math.nan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", default="json")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--pixels", type=int, default=8 * 1024 * 1024)
    parser.add_argument(
        "--vary", action="store_true", help="each image a few pixels smaller than the last"
    )
    parser.add_argument("--server-arg", action="append", default=[])
    args = parser.parse_args()

    from wiremark.harness.clients import connect
    from wiremark.harness.launch import ServerProcess
    from wiremark.payloads.contract import EncodedImage
    from wiremark.payloads.samples import face_images

    big = EncodedImage("big", photo(args.pixels))
    print(f"image: {args.pixels} pixels, JPEG {len(big.data) / 1024:.0f} KiB")
    server_args = ("--models", "face", "--max-image-pixels", str(args.pixels), *args.server_arg)
    with (
        ServerProcess(args.transport, server_args) as server,
        connect(args.transport, server.address, timeout=300) as client,
    ):
        assert server.proc is not None
        pid = server.proc.pid
        client.predict("face", face_images(sizes=(320,))[:1])
        warm = rss_mb(pid)
        print(f"warm server: RSS {warm:.0f} MB")
        start = time.perf_counter()
        for i in range(1, args.images + 1):
            image = EncodedImage(f"big-{i}", photo(args.pixels, 8 * i)) if args.vary else big
            client.predict("face", [image])
            if i % 10 == 0 or i == 1:
                took = (time.perf_counter() - start) / i
                print(f"after {i:>4} images: RSS {rss_mb(pid):6.0f} MB  ({took:.2f} s/image)")
        end = rss_mb(pid)
        print(
            f"{args.transport}: RSS warm {warm:.0f} MB, after {args.images} images {end:.0f} MB "
            f"(+{end - warm:.0f} MB), peak {peak_mb(pid):.0f} MB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
