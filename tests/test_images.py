"""Image folders: scanning without decoding, EXIF-correct sizes and pixels, nasty files (issue 5, item 1)."""

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotator.errors import ImageLoadError
from annotator.project.images import content_fingerprint, image_size, load_image, natural_key, scan_folder


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares width x height grey pixels, with a token of pixel data (a pixel bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _jpeg_with_orientation(path: Path, orientation: int) -> None:
    """A 64 x 32 (width x height) stored JPEG, red in its top-left 16 x 16 pixels, blue elsewhere."""
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[...] = (0, 0, 255)
    pixels[:16, :16] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=95, subsampling=0, exif=exif.tobytes())


def _red_box(rgb: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero((rgb[..., 0] > 128) & (rgb[..., 2] < 128))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.fixture(scope="module")
def nasty(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("nasty")
    (folder / "text.jpg").write_text("this is not an image\n")
    (folder / "empty.png").write_bytes(b"")
    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "whole.jpg", quality=90)
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    deep = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(deep).save(folder / "deep16.png")
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(folder / "cmyk.jpg", quality=95)
    palette = Image.new("P", (4, 2), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((3, 1), 1)
    palette.save(folder / "palette.png", transparency=0)
    _png_header_only(folder / "bomb.png", 30_000, 30_000)
    _png_header_only(folder / "large.png", 12_000, 12_000)
    return folder


def test_images_are_listed_in_natural_order_as_relative_paths(tmp_path):
    for name in ("img10.png", "img2.png", "IMG3.JPG", "sub/a1.webp", "img1.tiff"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert scan_folder(tmp_path).images == ("img1.tiff", "img2.png", "IMG3.JPG", "img10.png", "sub/a1.webp")


def test_natural_key_orders_digit_runs_by_value_per_folder():
    names = ["b/x.png", "a10/x.png", "a9/y.png", "a9/x10.png", "a9/x9.png"]
    assert sorted(names, key=natural_key) == ["a9/x9.png", "a9/x10.png", "a9/y.png", "a10/x.png", "b/x.png"]


def test_other_file_types_are_skipped_with_the_reason(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "a.png").write_bytes(b"x")
    result = scan_folder(tmp_path)
    assert result.images == ("a.png",)
    assert [(s.path, s.reason) for s in result.skipped] == [("notes.txt", "not an image type (.txt)")]


def test_hidden_files_and_folders_are_ignored(tmp_path):
    (tmp_path / ".annotator").mkdir()
    (tmp_path / ".annotator" / "a.png").write_bytes(b"x")
    (tmp_path / "._b.png").write_bytes(b"x")
    result = scan_folder(tmp_path)
    assert result.images == () and result.skipped == ()


def test_a_symlink_out_of_the_folder_is_skipped_and_one_inside_is_followed(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"x")
    (root / "real" / "a.png").write_bytes(b"x")
    (root / "escape.png").symlink_to(outside / "secret.png")
    (root / "escape_dir").symlink_to(outside, target_is_directory=True)
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    (root / "real" / "loop").symlink_to(root / "real", target_is_directory=True)
    result = scan_folder(root)
    assert result.images == ("real/a.png",)  # listed once, under its real path
    assert {s.path: s.reason for s in result.skipped} == {
        "escape.png": "symlink leads out of the image folder",
        "escape_dir": "symlink leads out of the image folder",
    }


def test_a_linked_folder_reached_only_through_its_link_is_listed_under_the_link(tmp_path):
    (tmp_path / ".store" / "inner").mkdir(parents=True)
    (tmp_path / ".store" / "inner" / "a.png").write_bytes(b"x")
    (tmp_path / "shown").symlink_to(tmp_path / ".store" / "inner", target_is_directory=True)
    assert scan_folder(tmp_path).images == ("shown/a.png",)


def test_a_broken_symlink_is_skipped(tmp_path):
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert [s.path for s in scan_folder(tmp_path).skipped] == ["gone.png"]


def test_a_missing_folder_raises_image_load_error(tmp_path):
    with pytest.raises(ImageLoadError, match="nowhere"):
        scan_folder(tmp_path / "nowhere")


def test_scan_of_the_nasty_folder_skips_only_the_empty_file(nasty):
    result = scan_folder(nasty)
    assert [(s.path, s.reason) for s in result.skipped] == [("empty.png", "empty file (0 bytes)")]
    assert set(result.images) == {
        "bomb.png", "cmyk.jpg", "deep16.png", "large.png", "palette.png", "text.jpg", "truncated.jpg", "whole.jpg"
    }  # fmt: skip


def test_a_text_file_named_jpg_is_refused_with_the_path(nasty):
    with pytest.raises(ImageLoadError, match=r"text\.jpg is not an image"):
        image_size(nasty / "text.jpg")


def test_a_truncated_jpeg_has_a_size_but_does_not_load(nasty):
    assert image_size(nasty / "truncated.jpg") == (64, 48)
    with pytest.raises(ImageLoadError, match=r"cannot decode image .*truncated\.jpg"):
        load_image(nasty / "truncated.jpg")


def test_a_16_bit_png_is_scaled_to_8_bits_over_its_full_range(nasty):
    rgb = load_image(nasty / "deep16.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 3, 3)
    assert rgb[0, :, 0].tolist() == [0, 100, 255]  # 0, 25700 and 65535 divided by 257


def test_a_cmyk_jpeg_loads_as_rgb(nasty):
    rgb = load_image(nasty / "cmyk.jpg")
    assert rgb.shape == (8, 8, 3)
    assert np.abs(rgb[4, 4].astype(int) - [0, 255, 255]).max() <= 8  # pure cyan


def test_a_palette_png_with_transparency_is_composited_on_white(nasty):
    rgb = load_image(nasty / "palette.png")
    assert rgb[0, 0].tolist() == [255, 255, 255]  # index 0 is transparent
    assert rgb[1, 3].tolist() == [255, 0, 0]


@pytest.mark.filterwarnings("error")
def test_a_pixel_bomb_is_refused_from_its_header_with_a_clear_message(nasty):
    with pytest.raises(ImageLoadError, match=r"bomb\.png is over the pixel limit"):
        load_image(nasty / "bomb.png")


@pytest.mark.filterwarnings("error")
def test_an_image_over_max_pixels_is_refused_without_a_pil_warning(nasty):
    with pytest.raises(ImageLoadError, match=r"12000x12000 = 144,000,000 pixels, over the limit of 100,000,000"):
        image_size(nasty / "large.png")


def test_max_pixels_is_configurable(nasty):
    with pytest.raises(ImageLoadError, match="over the limit of 3,000 pixels"):
        load_image(nasty / "whole.jpg", max_pixels=3000)  # 64 x 48 = 3072 pixels


def test_a_missing_file_raises_image_load_error(tmp_path):
    with pytest.raises(ImageLoadError, match="does not exist"):
        load_image(tmp_path / "nothing.png")


@pytest.mark.parametrize(
    "orientation, size, red_box",
    [
        (1, (64, 32), (0, 0, 16, 16)),
        # 6: shown turned 90 degrees clockwise; stored (x, y) is shown at (height - 1 - y, x).
        (6, (32, 64), (16, 0, 32, 16)),
        # 8: shown turned 90 degrees counter-clockwise; stored (x, y) is shown at (y, width - 1 - x).
        (8, (32, 64), (0, 48, 16, 64)),
    ],
)
def test_exif_orientation_is_applied_to_size_and_pixels(tmp_path, orientation, size, red_box):
    path = tmp_path / f"o{orientation}.jpg"
    _jpeg_with_orientation(path, orientation)
    rgb = load_image(path)
    assert image_size(path) == size
    assert rgb.shape == (size[1], size[0], 3)
    assert _red_box(rgb) == red_box


def test_alpha_is_composited_on_white(tmp_path):
    Image.new("RGBA", (2, 2), (255, 0, 0, 128)).save(tmp_path / "half.png")
    Image.new("LA", (2, 2), (0, 0)).save(tmp_path / "clear.png")
    # 128/255 red over white: green and blue are 255 * (1 - 128/255) = 127.
    assert load_image(tmp_path / "half.png")[0, 0].tolist() == [255, 127, 127]
    assert load_image(tmp_path / "clear.png")[0, 0].tolist() == [255, 255, 255]


def test_a_grey_image_loads_as_three_equal_channels(tmp_path):
    Image.fromarray(np.array([[7, 200]], dtype=np.uint8)).save(tmp_path / "grey.png")
    assert load_image(tmp_path / "grey.png").tolist() == [[[7, 7, 7], [200, 200, 200]]]


def test_a_copy_has_the_same_fingerprint_and_an_edit_changes_it(tmp_path):
    data = os.urandom(200_000)
    (tmp_path / "a.png").write_bytes(data)
    (tmp_path / "b.png").write_bytes(data)
    (tmp_path / "c.png").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert content_fingerprint(tmp_path / "a.png") == content_fingerprint(tmp_path / "b.png")
    assert content_fingerprint(tmp_path / "a.png") != content_fingerprint(tmp_path / "c.png")
