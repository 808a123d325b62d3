"""Bad input in image folders and project stores: each ends in one clear line, and the rest of the work goes on.

Symlink loops, names that are not UTF-8, image types the project does not list, a store whose interior pages are
damaged, and Python's once-only warnings kept once per run while images load.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotator.errors import ImageLoadError, ProjectStoreError
from annotator.project.images import load_image, scan_folder
from annotator.project.store import ProjectStore


def write_png(path: Path, colour=(200, 30, 30), size=(16, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def looped(tmp_path) -> Path:
    """A folder with one good image, two links that point at each other, a link to itself and a folder loop."""
    folder = tmp_path / "photos"
    write_png(folder / "good.png")
    os.symlink("b.png", folder / "a.png")
    os.symlink("a.png", folder / "b.png")
    os.symlink("self.png", folder / "self.png")
    os.symlink("loop", folder / "loop")
    return folder


@pytest.fixture
def not_utf8(tmp_path) -> Path:
    """A folder with a good image and one whose name holds the Latin-1 byte 0xE9 ("café.png" written in Latin-1)."""
    folder = tmp_path / "photos"
    write_png(folder / "good.png")
    Image.new("RGB", (16, 12), (0, 0, 200)).save(os.path.join(os.fsencode(folder), b"caf\xe9.png"), format="PNG")
    return folder


def damage_interior_page(store_path: Path, page: int = 3) -> bytes:
    """Overwrite one b-tree page (not the header page) with noise, as a failing disk would; the new bytes."""
    data = bytearray(store_path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    data[(page - 1) * page_size : page * page_size] = np.random.default_rng(0).bytes(page_size)
    store_path.write_bytes(bytes(data))
    return bytes(data)


@pytest.fixture
def damaged_store(tmp_path) -> tuple[Path, Path, bytes]:
    """(image folder, its store file, the damaged bytes): a store listing 300 images with its images table hit."""
    folder = tmp_path / "photos"
    for index in range(300):
        write_png(folder / f"img{index}.png", colour=(index % 256, 0, 0), size=(8, 8))
    with ProjectStore.for_folder(folder) as store:
        store.sync_folder()
        path = store.path
    return folder, path, damage_interior_page(path)


def test_symlink_loops_are_skipped_with_their_reason_and_the_good_image_is_listed(looped):
    scan = scan_folder(looped)
    assert scan.images == ("good.png",)
    reasons = {skipped.path: skipped.reason for skipped in scan.skipped}
    assert set(reasons) == {"a.png", "b.png", "self.png", "loop"}
    assert all("symlink loop" in reason for reason in reasons.values())


def test_a_folder_that_is_itself_a_symlink_loop_is_refused_in_one_line(tmp_path):
    os.symlink("root", tmp_path / "root")
    with pytest.raises(ImageLoadError, match="symlink loop"):
        scan_folder(tmp_path / "root")


def test_a_store_syncs_a_folder_with_symlink_loops(looped):
    with ProjectStore.for_folder(looped) as store:
        report = store.sync_folder()
        assert [record.path for record in store.images()] == ["good.png"]
    assert report.listed == 1 and len(report.skipped) == 4


def test_a_name_that_is_not_utf8_is_skipped_with_its_reason_shown_printably(not_utf8):
    scan = scan_folder(not_utf8)
    assert scan.images == ("good.png",)
    [skipped] = scan.skipped
    assert skipped.path == "caf\\xe9.png"
    assert "not valid UTF-8" in skipped.reason
    skipped.path.encode("utf-8")  # printable everywhere: a terminal, a Qt label, a JSON report


def test_one_name_that_is_not_utf8_does_not_block_the_rest_of_the_folder(not_utf8):
    with ProjectStore.for_folder(not_utf8) as store:
        store.sync_folder()
        assert [record.path for record in store.images()] == ["good.png"]


def test_a_gif_is_listed_and_loads_as_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (10, 8), colour) for colour in ((250, 0, 0), (0, 250, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert scan_folder(tmp_path).images == ("anim.gif",)
    pixels = load_image(tmp_path / "anim.gif")
    assert pixels.shape == (8, 10, 3)
    assert pixels[0, 0, 0] > 200 and pixels[0, 0, 1] < 50


def test_an_image_type_the_project_does_not_list_says_so_where_other_files_are_simply_not_images(tmp_path):
    write_png(tmp_path / "good.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "icon.ico")
    (tmp_path / "notes.txt").write_text("ground truth elsewhere")
    reasons = {skipped.path: skipped.reason for skipped in scan_folder(tmp_path).skipped}
    assert reasons == {"icon.ico": "image type not supported (.ico)", "notes.txt": "not an image type (.txt)"}


def test_a_store_with_a_damaged_interior_page_is_refused_with_what_to_do_and_left_as_it_is(damaged_store):
    folder, path, damaged = damaged_store
    with pytest.raises(ProjectStoreError) as raised:
        ProjectStore.for_folder(folder)
    message = str(raised.value)
    assert f"project store {path} is damaged" in message
    assert ".recover" in message and "move it aside" in message
    assert path.read_bytes() == damaged


def test_a_file_that_is_not_a_database_is_called_damaged_too(tmp_path):
    folder = tmp_path / "photos"
    write_png(folder / "a.png")
    store_path = folder / ".annotator" / "project.sqlite"
    store_path.parent.mkdir()
    store_path.write_bytes(b"this is not SQLite" * 400)
    with pytest.raises(ProjectStoreError, match="is damaged .*file is not a database"):
        ProjectStore.for_folder(folder)
    assert store_path.read_bytes() == b"this is not SQLite" * 400


def test_loading_images_does_not_make_once_only_warnings_show_again(tmp_path):
    image = write_png(tmp_path / "a.png")
    code = (
        "import warnings\n"
        "from annotator.project.images import image_size, load_image\n"
        "def model_step():\n"
        "    warnings.warn('past_key_values as a tuple is deprecated', FutureWarning)\n"
        "for _ in range(5):\n"
        f"    load_image({str(image)!r}); image_size({str(image)!r}); model_step()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("past_key_values as a tuple is deprecated") == 1


# ----- the CLI: `annotator prelabel` -------------------------------------------------------------------------------


def prelabel(folder: Path, *extra: str) -> list[str]:
    from annotator.synthetic.planted import PLANTED_MODEL_DIR

    return [
        "prelabel", str(folder), "--expression", "the red one", "--model", str(PLANTED_MODEL_DIR),
        "--device", "cpu", "--prefetch", "0", *extra,
    ]  # fmt: skip


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if a prelabel run gets as far as loading the model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the problem was found")

    monkeypatch.setattr("annotator.models.loading.load_grounder", refuse)


@pytest.mark.usefixtures("one_torch_thread")
def test_prelabel_labels_the_good_image_and_lists_each_symlink_loop_with_its_reason(looped, tmp_path, capsys):
    from annotator.cli import main

    code = main(prelabel(looped, "--out", str(tmp_path / "out.json")))
    out = capsys.readouterr().out
    assert code == 0
    assert "1 image(s) labelled now" in out
    for name in ("a.png", "b.png", "self.png", "loop"):
        assert f"  {name}: symlink loop" in out


@pytest.mark.usefixtures("one_torch_thread")
def test_prelabel_labels_the_rest_and_names_the_file_whose_name_is_not_utf8(not_utf8, tmp_path, capsys):
    from annotator.cli import main

    code = main(prelabel(not_utf8, "--out", str(tmp_path / "out.json")))
    out = capsys.readouterr().out
    assert code == 0
    assert "1 image(s) labelled now" in out
    assert "caf\\xe9.png: file name is not valid UTF-8" in out


@pytest.mark.usefixtures("one_torch_thread")
def test_prelabel_reports_an_image_type_it_does_not_read(tmp_path, capsys):
    from annotator.cli import main

    folder = tmp_path / "photos"
    write_png(folder / "a.png")
    Image.new("RGB", (16, 16)).save(folder / "icon.ico")
    assert main(prelabel(folder, "--out", str(tmp_path / "out.json"))) == 0
    assert "icon.ico: image type not supported (.ico)" in capsys.readouterr().out


@pytest.mark.parametrize("content", ["nothing", "no images"])
def test_prelabel_on_a_folder_without_images_says_so_before_the_model_loads(tmp_path, capsys, no_model_load, content):
    from annotator.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    if content == "no images":
        (folder / "README.txt").write_text("labels elsewhere")
    out = tmp_path / "out.json"
    code = main(prelabel(folder, "--out", str(out)))
    assert_one_line_error(code, capsys.readouterr().err, f"no images to label in {folder}", ".png")
    assert not out.exists()


def test_prelabel_on_a_damaged_store_says_what_to_do_before_the_model_loads(damaged_store, capsys, no_model_load):
    from annotator.cli import main

    folder, path, damaged = damaged_store
    code = main(prelabel(folder))
    assert_one_line_error(code, capsys.readouterr().err, f"project store {path} is damaged", ".recover")
    assert path.read_bytes() == damaged


def test_prelabel_with_an_empty_category_is_refused_before_anything_runs(tmp_path, capsys, no_model_load):
    from annotator.cli import main

    write_png(tmp_path / "a.png")
    code = main(prelabel(tmp_path, "--category", " "))
    assert_one_line_error(code, capsys.readouterr().err, "--category", "empty")
    assert not (tmp_path / ".annotator").exists()


@pytest.mark.parametrize("name", ["\ud800.png", "caf\udce9.png", "a\0.png", "x" * 5000 + ".png"])
def test_an_image_path_that_no_file_can_have_is_refused_with_its_reason_not_raised(tmp_path, name):
    write_png(tmp_path / "good.png")
    with ProjectStore.for_folder(tmp_path) as store:
        records, refused = store.add_images(["good.png", name])
    assert [record.path for record in records] == ["good.png"]
    [(path, reason)] = [(item.path, item.reason) for item in refused]
    assert path == name and reason


@pytest.mark.parametrize("where", ["an existing folder", "below a file"])
def test_prelabel_out_that_cannot_be_a_file_is_refused_before_the_model_loads(tmp_path, capsys, no_model_load, where):
    from annotator.cli import main

    folder = tmp_path / "photos"
    write_png(folder / "a.png")
    out = tmp_path / "exports"
    out.mkdir()
    if where == "below a file":
        (tmp_path / "plain").write_text("")
        out = tmp_path / "plain" / "out.json"
    code = main(prelabel(folder, "--out", str(out)))
    err = capsys.readouterr().err
    assert_one_line_error(code, err, f"cannot write COCO file {out}")
    assert ".tmp" not in err


def test_find_heads_out_that_is_a_folder_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from annotator.cli import main
    from annotator.synthetic.planted import PLANTED_MODEL_DIR

    monkeypatch.setattr("annotator.lvlm.engine.LvlmEngine.load", pytest.fail)
    args = ["find-heads", "--model", str(PLANTED_MODEL_DIR), "--synthetic", "2", "--out", str(tmp_path)]
    code = main([*args, "--device", "cpu"])
    assert_one_line_error(code, capsys.readouterr().err, f"cannot write heads file {tmp_path}", "is a folder")


@pytest.mark.usefixtures("one_torch_thread")
def test_prelabel_on_a_full_disk_names_the_export_and_keeps_the_proposals_in_the_store(tmp_path, capsys, monkeypatch):
    import errno

    from annotator.cli import main
    from annotator.project import atomic_file

    folder = tmp_path / "photos"
    write_png(folder / "a.png")
    out = tmp_path / "out.json"

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic_file.os, "fsync", full_disk)
    code = main(prelabel(folder, "--out", str(out)))
    last_line = capsys.readouterr().err.splitlines()[-1] + "\n"  # after the progress bars of the run
    assert_one_line_error(
        code, last_line, f"cannot write COCO file {out}", "No space left on device", "safe in the project store"
    )
    assert not out.exists() and not list(tmp_path.glob(".out.json*"))
    with ProjectStore.for_folder(folder) as store:
        assert len(store.annotations()) == 1
