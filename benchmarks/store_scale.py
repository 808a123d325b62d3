"""Project store at scale: listing, header scan, commit latency, COCO export and import.

A folder of small PNG images (100,000 by default, 32 x 24 pixels, 1,000 per subfolder, each with distinct bytes)
is generated once under /tmp and reused. Measured, each the median of `--repeats` runs after one untimed warm-up
(for the header scan a warm-up on 2,000 images): the names-only scan, the first listing of a new store (open +
sync + `images()`), the listing of a reopened store, `images()` alone, and the full header scan
(`fill_image_info`: EXIF size and content fingerprint of every image). Then
`--annotations` accepted annotations (a small mask each, one per image) are committed one call at a time with
`synchronous=FULL` (the default) and, on a copy of the store, `NORMAL`: per-commit latency percentiles (100
pending warm-up commits first, not counted), and opening that store with its page check (`PRAGMA quick_check`,
which every open runs). Then `export_coco` (polygons and RLE) and `import_coco` of each
file into a fresh store (which registers and reads the 10,000 images it names).

Run: .venv/bin/python benchmarks/store_scale.py [--images N] [--annotations M] [--repeats R] [--work DIR]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import cv2
import numpy as np
import PIL
import shapely
from PIL import Image

from annotator.project.coco import export_coco, import_coco
from annotator.project.geometry import Rle
from annotator.project.images import ScanResult, scan_folder
from annotator.project.store import ProjectStore

IMAGE_W, IMAGE_H = 32, 24
PER_FOLDER = 1000
WARM_UP_COMMITS = 100


def generate_images(folder: Path, count: int) -> None:
    """Write `count` distinct small PNGs under `folder` unless a previous run completed it."""
    marker = folder / ".complete"
    if marker.exists() and marker.read_text() == str(count):
        return
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for index in range(count):
        sub = folder / f"part{index // PER_FOLDER:03d}"
        if index % PER_FOLDER == 0:
            sub.mkdir(parents=True)
            print(f"generating images: {index:,}/{count:,}", file=sys.stderr, flush=True)
        pixels = rng.integers(0, 256, (IMAGE_H, IMAGE_W, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"img{index}.png", compress_level=1)
    marker.write_text(str(count))
    print(f"generated {count:,} images in {time.perf_counter() - start:.0f} s", file=sys.stderr)


def timed(
    run: Callable[[], object],
    repeats: int,
    before: Callable[[], None] | None = None,
    warm_up: Callable[[], object] | None = None,
) -> list[float]:
    """Seconds of `repeats` runs of `run` after one untimed warm-up (`warm_up`, or `run` itself); `before` runs
    untimed before each of them."""
    if before is not None:
        before()
    (warm_up or run)()
    seconds = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def store_bytes(path: Path) -> int:
    """Size of the store file after checkpointing its WAL into it."""
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def commit_latencies(store: ProjectStore, image_ids: list[int], category_id: int, masks: list[Rle]) -> np.ndarray:
    """Milliseconds per `add_annotation(..., status="accepted")` call, one per image, after pending warm-ups."""
    for image_id in image_ids[:WARM_UP_COMMITS]:
        store.add_annotation(image_id, category_id, (0, 0, 4, 4), status="pending")
    latencies = []
    for image_id, rle in zip(image_ids, masks):
        start = time.perf_counter()
        store.add_annotation(image_id, category_id, rle=rle, expression="the square", status="accepted")
        latencies.append(time.perf_counter() - start)
    return np.asarray(latencies) * 1000.0


def square_masks(count: int) -> list[Rle]:
    masks = []
    for index in range(count):
        mask = np.zeros((IMAGE_H, IMAGE_W), dtype=bool)
        x, y = index % 20, index % 14
        mask[y : y + 8 + index % 3, x : x + 10] = True
        masks.append(Rle.from_mask(mask))
    return masks


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return f"{cpu}, {os.cpu_count()} logical CPUs, load average at the start {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--annotations", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/annotator-store-scale"))
    args = parser.parse_args()
    if args.annotations + WARM_UP_COMMITS > args.images:
        parser.error("--images must exceed --annotations by at least 100 (one annotation per image)")
    folder = args.work / f"images-{args.images}"
    runs = args.work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    generate_images(folder, args.images)
    host = machine()
    rows: list[tuple[str, str]] = []

    def fresh(name: str) -> Path:
        path = runs / name
        for old in runs.glob(name + "*"):
            old.unlink()
        return path

    scan_s = timed(lambda: scan_folder(folder), args.repeats)
    rows.append(("scan_folder (names and byte sizes only)", f"{statistics.median(scan_s):.2f} s"))

    def first_listing() -> None:
        with ProjectStore.open(runs / "listing.sqlite", image_root=folder) as store:
            store.sync_folder()
            assert len(store.images()) == args.images

    listing_s = timed(first_listing, args.repeats, before=lambda: fresh("listing.sqlite"))
    rows.append(("first listing, new store (open + sync_folder + images())", f"{statistics.median(listing_s):.2f} s"))
    reopen_s = timed(first_listing, args.repeats)
    rows.append(("listing, reopened store (open + sync_folder + images())", f"{statistics.median(reopen_s):.2f} s"))
    with ProjectStore.open(runs / "listing.sqlite") as store:
        records_s = timed(store.images, args.repeats)
    rows.append((f"of which images() ({args.images:,} ImageRecords with status and counts)",
                 f"{statistics.median(records_s):.2f} s"))  # fmt: skip

    main_path = runs / "main.sqlite"

    def synced_store() -> None:
        with ProjectStore.open(fresh("main.sqlite"), image_root=folder) as store:
            store.sync_folder()

    def header_scan() -> None:
        with ProjectStore.open(main_path) as store:
            assert store.fill_image_info() == args.images

    def header_scan_warm_up() -> None:
        subset = scan_folder(folder)
        with ProjectStore.open(fresh("warm.sqlite"), image_root=folder) as store:
            store.sync_folder(ScanResult(subset.root, subset.images[:2000], ()))
            store.fill_image_info()

    scan_headers_s = statistics.median(
        timed(header_scan, args.repeats, before=synced_store, warm_up=header_scan_warm_up)
    )
    rows.append(
        ("full header scan (fill_image_info: EXIF size + fingerprint)",
         f"{scan_headers_s:.1f} s ({scan_headers_s / args.images * 1e6:.0f} us/image)")
    )  # fmt: skip
    rows.append(("store size after the header scan", f"{store_bytes(main_path) / 1e6:.1f} MB"))

    normal_path = runs / "normal.sqlite"
    shutil.copy(main_path, normal_path)
    masks = square_masks(args.annotations)
    latencies = {}
    for synchronous, path in (("FULL", main_path), ("NORMAL", normal_path)):
        with ProjectStore.open(path, synchronous=synchronous) as store:
            category = store.ensure_category("square")
            image_ids = [record.id for record in store.images()[: args.annotations + WARM_UP_COMMITS]]
            latencies[synchronous] = commit_latencies(store, image_ids, category.id, masks)
    for synchronous, values in latencies.items():
        p50, p99 = np.percentile(values, [50, 99])
        rows.append(
            (f"commit latency, add_annotation accepted, synchronous={synchronous} ({len(values):,} commits)",
             f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {values.max():.1f} ms")
        )  # fmt: skip
    normal_path.unlink()
    rows.append((f"store size with {args.annotations:,} annotations", f"{store_bytes(main_path) / 1e6:.1f} MB"))

    reopen_main_s = statistics.median(timed(lambda: ProjectStore.open(main_path).close(), args.repeats))
    with closing(sqlite3.connect(main_path)) as db:
        check_s = statistics.median(timed(lambda: db.execute("PRAGMA quick_check").fetchall(), args.repeats))
    rows.append(
        (f"opening this store (ProjectStore.open), of which the page check PRAGMA quick_check",
         f"{reopen_main_s * 1e3:.0f} ms, of which {check_s * 1e3:.0f} ms")
    )  # fmt: skip

    with ProjectStore.open(main_path) as store:
        for kind in ("polygon", "rle"):
            out = runs / f"export-{kind}.json"
            export_s = statistics.median(timed(lambda: export_coco(store, out, segmentation=kind), args.repeats))
            report = export_coco(store, out, segmentation=kind)
            rows.append(
                (f"export_coco segmentation={kind} ({report.annotations:,} annotations, {report.images:,} images)",
                 f"{export_s:.2f} s, file {out.stat().st_size / 1e6:.1f} MB")
            )  # fmt: skip
    for kind in ("polygon", "rle"):
        source = runs / f"export-{kind}.json"
        imported = []

        def run_import() -> None:
            with ProjectStore.open(runs / "import.sqlite", image_root=folder) as target:
                report = import_coco(target, source)
                assert not report.issues
                imported.append(report.annotations_imported)

        import_s = statistics.median(timed(run_import, args.repeats, before=lambda: fresh("import.sqlite")))
        rows.append(
            (f"import_coco of the {kind} export into a new store ({imported[-1]:,} annotations, images registered)",
             f"{import_s:.2f} s")
        )  # fmt: skip

    versions = (
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, numpy {np.__version__}, "
        f"Pillow {PIL.__version__}, pycocotools {importlib.metadata.version('pycocotools')}, OpenCV {cv2.__version__}, "
        f"shapely {shapely.__version__}"
    )
    print(f"\n### Project store at scale: {args.images:,} images of {IMAGE_W}x{IMAGE_H} px\n")
    print(f"Machine: {host}, {platform.system()} {platform.release()}  ")
    print(f"Versions: {versions}  ")
    print(f"Medians of {args.repeats} runs after an untimed warm-up; the folder is in the OS file cache.\n")
    print("| measure | result |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
