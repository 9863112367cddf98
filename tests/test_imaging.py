"""safecut.imaging: decoding odd files, safe paths, listing, batch loading, fingerprints, atomic PNG writes."""
from __future__ import annotations

import errno
import os
import string
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from safecut import imaging
from safecut.errors import BadInputError

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ---- fixtures: a real folder of odd and bad images ------------------------------------------------
def make_good_images(folder) -> dict[str, str]:
    """Writes one file per tricky case; returns {case: file name}."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    p = lambda n: os.path.join(folder, n)  # noqa: E731

    # JPEG, stored 64x32 (left half red, right half blue), EXIF orientation 6 = rotate 90° clockwise
    im = Image.new("RGB", (64, 32), (255, 0, 0))
    im.paste((0, 0, 255), (32, 0, 64, 32))
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(p("rotated.jpg"), exif=exif, quality=95)

    Image.new("RGBA", (3, 2), (10, 20, 30, 40)).save(p("rgba.png"))
    Image.new("LA", (2, 2), (100, 50)).save(p("gray_alpha.png"))

    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    pal.putpixel((1, 1), 1)
    pal.save(p("palette.png"), transparency=0)  # index 0 (red) is transparent

    g16 = np.array([[0, 255], [1000, 65535]], np.uint16)
    Image.fromarray(g16).save(p("gray16.png"))  # mode I;16

    cmyk = Image.new("CMYK", (16, 16), (0, 0, 0, 0))  # white
    cmyk.paste((255, 0, 0, 0), (0, 0, 8, 16))          # left half cyan
    cmyk.save(p("cmyk.jpg"), quality=100)

    f1, f2 = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 255, 0))
    f1.save(p("animated.gif"), save_all=True, append_images=[f2], duration=100, loop=0)

    Image.new("RGB", (1, 1), (10, 20, 30)).save(p("one.png"))
    Image.new("RGB", (2, 2), (40, 50, 60)).save(p("tiny.webp"), lossless=True)
    return {"rotated": "rotated.jpg", "rgba": "rgba.png", "la": "gray_alpha.png", "p": "palette.png",
            "i16": "gray16.png", "cmyk": "cmyk.jpg", "gif": "animated.gif", "one": "one.png", "webp": "tiny.webp"}


def make_bad_images(folder) -> list[str]:
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, "empty.png"), "wb").close()
    noise = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    full = os.path.join(folder, "_full.tmp")
    Image.fromarray(noise).save(full, format="PNG")
    data = open(full, "rb").read()
    os.unlink(full)
    with open(os.path.join(folder, "truncated.png"), "wb") as fh:
        fh.write(data[: len(data) // 2])
    with open(os.path.join(folder, "notes.png"), "w") as fh:
        fh.write("this is not an image\n")
    return ["empty.png", "truncated.png", "notes.png"]


def solid(path, size, color, mode="RGB"):
    Image.new(mode, size, color).save(path)
    return str(path)


@pytest.fixture()
def odd(tmp_path):
    names = make_good_images(tmp_path)
    return tmp_path, names


# ---- decoding -----------------------------------------------------------------------------------
def test_exif_orientation_is_applied(odd):
    folder, n = odd
    d = imaging.decode_image(str(folder / n["rotated"]))
    assert d.rgb.shape == (64, 32, 3) and d.rgb.dtype == np.float32
    assert d.info["exif_rotated"] and d.info["orientation"] == 6 and d.info["stored_size"] == (64, 32)
    # rotated clockwise: the stored left (red) half is now on top, the right (blue) half at the bottom
    np.testing.assert_allclose(d.rgb[8, 16], [1, 0, 0], atol=0.03)
    np.testing.assert_allclose(d.rgb[56, 16], [0, 0, 1], atol=0.03)
    assert d.alpha is None and not d.mask.any()


def test_rgba_exact_values_and_mask_convention(odd):
    folder, n = odd
    d = imaging.decode_image(str(folder / n["rgba"]))
    assert d.rgb.shape == (2, 3, 3)
    np.testing.assert_array_equal(d.rgb[1, 2], np.float32([10, 20, 30]) / np.float32(255))
    np.testing.assert_array_equal(d.alpha, np.full((2, 3), np.float32(40) / np.float32(255)))
    np.testing.assert_allclose(d.mask, 1 - 40 / 255, atol=1e-6)  # ComfyUI: mask = 1 - alpha


def test_gray_alpha(odd):
    folder, n = odd
    d = imaging.decode_image(str(folder / n["la"]))
    np.testing.assert_allclose(d.rgb, 100 / 255, atol=1e-7)
    np.testing.assert_allclose(d.alpha, 50 / 255, atol=1e-7)


def test_palette_transparency_becomes_alpha(odd):
    folder, n = odd
    d = imaging.decode_image(str(folder / n["p"]))
    np.testing.assert_array_equal(d.alpha, [[0, 0], [0, 1]])
    np.testing.assert_array_equal(d.mask, [[1, 1], [1, 0]])
    np.testing.assert_array_equal(d.rgb[1, 1], [0, 1, 0])


def test_rgb_colour_key_transparency(tmp_path):
    im = Image.new("RGB", (2, 1), (1, 2, 3))
    im.putpixel((1, 0), (9, 9, 9))
    im.save(tmp_path / "key.png", transparency=(1, 2, 3))
    d = imaging.decode_image(str(tmp_path / "key.png"))
    np.testing.assert_array_equal(d.alpha, [[0, 1]])


def test_16bit_is_scaled_from_65535_not_clipped(odd):
    folder, n = odd
    d = imaging.decode_image(str(folder / n["i16"]))
    assert d.info["mode"] == "I;16"
    expect = np.float32([[0, 255], [1000, 65535]]) / np.float32(65535)
    np.testing.assert_allclose(d.rgb[..., 0], expect, rtol=1e-6)
    np.testing.assert_array_equal(d.rgb[..., 0], d.rgb[..., 2])
    assert d.rgb[1, 0, 0] < 0.02 and d.rgb[1, 1, 0] == 1.0  # 1000 is dark, not clipped to white


def test_cmyk_jpeg(odd):
    folder, n = odd
    d = imaging.decode_image(str(folder / n["cmyk"]))
    assert d.info["mode"] == "CMYK"
    np.testing.assert_allclose(d.rgb[8, 2], [0, 1, 1], atol=0.04)   # cyan
    np.testing.assert_allclose(d.rgb[8, 13], [1, 1, 1], atol=0.04)  # white


def test_animated_gif_gives_first_frame(odd):
    folder, n = odd
    d = imaging.decode_image(str(folder / n["gif"]))
    assert d.info["frames"] == 2 and d.info["animated"]
    np.testing.assert_array_equal(d.rgb[0, 0], [1, 0, 0])


def test_one_pixel_and_webp_and_bytes(odd):
    folder, n = odd
    d = imaging.decode_image(str(folder / n["one"]))
    assert d.rgb.shape == (1, 1, 3)
    np.testing.assert_array_equal(d.rgb[0, 0] * 255, [10, 20, 30])
    w = imaging.decode_image((folder / n["webp"]).read_bytes(), name="tiny.webp")
    np.testing.assert_allclose(w.rgb[1, 1] * 255, [40, 50, 60], atol=1e-4)
    assert w.info["format"] == "WEBP"


def test_content_wins_over_extension(tmp_path):
    solid(tmp_path / "real_png.png", (2, 2), (1, 2, 3))
    os.rename(tmp_path / "real_png.png", tmp_path / "named.jpg")
    d = imaging.decode_image(str(tmp_path / "named.jpg"))
    assert d.info["format"] == "PNG" and "extension_mismatch" in d.info


@pytest.mark.parametrize("name,needle", [("empty.png", "empty (0 bytes)"), ("truncated.png", "truncated"),
                                         ("notes.png", "not a readable image")])
def test_bad_files_name_the_file_and_the_fix(tmp_path, name, needle):
    make_bad_images(tmp_path)
    with pytest.raises(BadInputError) as ei:
        imaging.decode_image(str(tmp_path / name))
    msg = str(ei.value)
    assert name in msg and needle in msg and "remove it" in msg


def test_truncated_is_refused_even_when_pillow_global_allows_it(tmp_path, monkeypatch):
    make_bad_images(tmp_path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as another node pack might leave it
    with pytest.raises(BadInputError, match="truncated"):
        imaging.decode_image(str(tmp_path / "truncated.png"))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_unsupported_extension(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(BadInputError, match=r"'a.txt' is not a supported image file"):
        imaging.decode_image(str(tmp_path / "a.txt"))


def test_decompression_bomb_limit(tmp_path, monkeypatch):
    solid(tmp_path / "big.png", (100, 100), (0, 0, 0))
    monkeypatch.setenv("SAFECUT_MAX_PIXELS", "5000")
    with pytest.raises(BadInputError) as ei:
        imaging.decode_image(str(tmp_path / "big.png"))
    assert "big.png" in str(ei.value) and "10,000 pixels" in str(ei.value) and "SAFECUT_MAX_PIXELS" in str(ei.value)
    monkeypatch.setenv("SAFECUT_MAX_PIXELS", "10000")
    assert imaging.decode_image(str(tmp_path / "big.png")).rgb.shape == (100, 100, 3)
    monkeypatch.setenv("SAFECUT_MAX_PIXELS", "lots")
    with pytest.raises(BadInputError, match="SAFECUT_MAX_PIXELS"):
        imaging.decode_image(str(tmp_path / "big.png"))


def test_missing_file(tmp_path):
    with pytest.raises(BadInputError, match="was not found"):
        imaging.decode_image(str(tmp_path / "gone.png"))


# ---- paths --------------------------------------------------------------------------------------
@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "input"
    (root / "shots" / "day1").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    os.symlink(outside, root / "escape")
    os.symlink(root / "shots", root / "alias")
    return root, outside, allowed


def test_resolve_dir_accepts_inside_paths(tree):
    root, outside, allowed = tree
    real = os.path.realpath
    assert imaging.resolve_dir("", str(root)) == real(root)
    assert imaging.resolve_dir("  shots/day1 ", str(root)) == real(root / "shots" / "day1")
    assert imaging.resolve_dir("alias", str(root)) == real(root / "shots")  # link that stays inside
    assert imaging.resolve_dir(str(root / "shots"), str(root)) == real(root / "shots")
    assert imaging.resolve_dir(str(allowed), str(root), [str(allowed)]) == real(allowed)


@pytest.mark.parametrize("bad,needle", [
    ("..", "'..'"), ("shots/../..", "'..'"), ("shots/../shots", "'..'"), ("%2e%2e", "%-encoded"),
    ("%2E%2E/x", "%-encoded"), ("%252e%252e", "%-encoded"), ("shots\\..\\..", "backslash"),
    ("shots\x00", "NUL"), ("a%00b", "NUL"), ("shots%5c..", "backslash"), ("escape", "symbolic link"),
    ("escape/sub", "symbolic link"), ("missing", "does not exist"), ("line\nbreak", "control"),
])
def test_resolve_dir_refuses_escapes(tree, bad, needle):
    root, _, _ = tree
    if needle == "backslash" and os.sep == "\\":
        pytest.skip("backslash is the separator on Windows")
    with pytest.raises(BadInputError) as ei:
        imaging.resolve_dir(bad, str(root))
    assert needle in str(ei.value)


def test_absolute_outside_roots_refused(tree, monkeypatch):
    root, outside, allowed = tree
    with pytest.raises(BadInputError, match="SAFECUT_ALLOWED_ROOTS"):
        imaging.resolve_dir(str(outside), str(root))
    with pytest.raises(BadInputError, match="outside"):
        imaging.resolve_dir("/etc", str(root), [str(allowed)])
    monkeypatch.setenv("SAFECUT_ALLOWED_ROOTS", os.pathsep.join([str(allowed), "", str(outside)]))
    assert imaging.allowed_roots_from_env() == [str(allowed), str(outside)]
    assert imaging.resolve_dir(str(outside), str(root), imaging.allowed_roots_from_env()) == os.path.realpath(outside)


def test_a_file_is_not_a_folder(tree):
    root, _, _ = tree
    solid(root / "x.png", (1, 1), (0, 0, 0))
    with pytest.raises(BadInputError, match="is a file, not a folder"):
        imaging.resolve_dir("x.png", str(root))


@pytest.fixture(scope="module")
def fuzz_tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    root, outside, allowed = base / "root", base / "outside", base / "allowed"
    for d in (root / "a" / "b", outside, allowed):
        d.mkdir(parents=True)
    os.symlink(outside, root / "out")
    os.symlink(root / "a", root / "in")
    os.symlink("/", root / "a" / "slash")
    os.symlink("../..", root / "a" / "up")
    return str(root), str(outside), str(allowed)


_PIECES = st.sampled_from(["..", ".", "a", "b", "out", "in", "slash", "up", "%2e", "%2E%2e", "%252e", "%2f",
                           "%5c", "%00", "\\", "/", "//", "~", "...", ". .", "\x00", "C:", "etc", "passwd", " "])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.one_of(_PIECES, st.text(string.printable, max_size=4)), max_size=8),
       absolute=st.booleans())
def test_fuzz_resolve_dir_never_leaves_the_roots(fuzz_tree, pieces, absolute):
    root, outside, allowed = fuzz_tree
    text = "".join(pieces)
    if absolute:
        text = os.path.join(root if len(pieces) % 2 else outside, text)
    try:
        got = imaging.resolve_dir(text, root, [allowed], must_exist=False)
    except BadInputError:
        return
    roots = [os.path.realpath(root), os.path.realpath(allowed)]
    assert any(os.path.commonpath([got, r]) == r for r in roots), (text, got)
    assert ".." not in text.replace("\\", "/").split("/")


# ---- listing ------------------------------------------------------------------------------------
@pytest.fixture()
def numbered(tmp_path):
    d = tmp_path / "shots"
    d.mkdir()
    for i in (10, 2, 1, 33):
        solid(d / f"img{i}.png", (2, 2), (i, 0, 0))
    solid(d / "IMG5.PNG", (2, 2), (5, 0, 0))
    (d / "readme.txt").write_text("not an image")
    solid(d / ".hidden.png", (2, 2), (0, 0, 0))
    (d / "sub").mkdir()
    solid(d / "sub" / "img3.png", (2, 2), (3, 0, 0))
    return d


def names_of(files):
    return [files.name(p) for p in files]


def test_natural_name_and_mtime_sort(numbered):
    nat = imaging.list_images(str(numbered))
    assert names_of(nat) == ["img1.png", "img2.png", "IMG5.PNG", "img10.png", "img33.png"]
    assert names_of(imaging.list_images(str(numbered), sort="name")) == \
        ["IMG5.PNG", "img1.png", "img10.png", "img2.png", "img33.png"]
    for i, n in enumerate(["img33.png", "img1.png", "IMG5.PNG", "img2.png", "img10.png"]):
        os.utime(numbered / n, ns=(1_000_000_000 * (i + 1),) * 2)
    assert names_of(imaging.list_images(str(numbered), sort="mtime")) == \
        ["img33.png", "img1.png", "IMG5.PNG", "img2.png", "img10.png"]


def test_start_limit_pattern_recursive(numbered):
    assert names_of(imaging.list_images(str(numbered), start=1, limit=2)) == ["img2.png", "IMG5.PNG"]
    assert names_of(imaging.list_images(str(numbered), start=4, limit=0)) == ["img33.png"]
    assert names_of(imaging.list_images(str(numbered), start=9)) == []
    assert names_of(imaging.list_images(str(numbered), "img?.png")) == ["img1.png", "img2.png", "IMG5.PNG"]
    assert names_of(imaging.list_images(str(numbered), "*.PNG")) == \
        ["img1.png", "img2.png", "IMG5.PNG", "img10.png", "img33.png"]
    assert names_of(imaging.list_images(str(numbered), recursive=True)) == \
        ["img1.png", "img2.png", "IMG5.PNG", "img10.png", "img33.png", "sub/img3.png"]
    for bad in ("../*", "sub/*", "*\\*", "a\x00"):
        with pytest.raises(BadInputError, match="pattern"):
            imaging.list_images(str(numbered), bad)
    with pytest.raises(BadInputError, match="sort"):
        imaging.list_images(str(numbered), sort="size")


def test_symlinked_file_outside_is_refused_and_reported(numbered, tmp_path):
    secret = tmp_path / "secret.png"
    solid(secret, (2, 2), (9, 9, 9))
    os.symlink(secret, numbered / "img4.png")
    os.symlink(numbered / "img1.png", numbered / "img6.png")       # inside: fine
    os.symlink(numbered / "nothing.png", numbered / "img7.png")    # broken (target would be inside)
    files = imaging.list_images(str(numbered), limit=6)  # refused entries keep their place in the order
    assert names_of(files) == ["img1.png", "img2.png", "IMG5.PNG", "img6.png"]
    refused = {r["file"]: r["error"] for r in files.refused}
    assert set(refused) == {"img4.png", "img7.png"}
    assert "outside" in refused["img4.png"] and "broken" in refused["img7.png"]
    all_files = imaging.list_images(str(numbered))
    assert "img6.png" in names_of(all_files) and str(secret) not in all_files


# ---- batch loading ------------------------------------------------------------------------------
def test_list_mode_native_sizes_and_masks(odd):
    folder, n = odd
    files = imaging.list_images(str(folder))
    res = imaging.load_batch(files)
    assert res.names == sorted(n.values(), key=imaging.natural_key)
    shapes = dict(zip(res.names, (im.shape for im in res.images)))
    assert shapes["rotated.jpg"] == (64, 32, 3) and shapes["one.png"] == (1, 1, 3)
    masks = dict(zip(res.names, res.masks))
    assert not masks["one.png"].any() and masks["one.png"].shape == (1, 1)
    np.testing.assert_allclose(masks["rgba.png"], 1 - 40 / 255, atol=1e-6)
    assert res.errors == [] and res.size is None


def test_fail_mode_lists_every_bad_file(odd):
    folder, _ = odd
    bad = make_bad_images(folder)
    with pytest.raises(BadInputError) as ei:
        imaging.load_batch(imaging.list_images(str(folder)), on_error="fail")
    msg = str(ei.value)
    for name in bad:
        assert f"'{name}'" in msg
    assert "3 of 12" in msg and "skip" in msg
    assert sorted(e["file"] for e in ei.value.errors) == sorted(bad)


def test_skip_mode_reports_bad_files(odd):
    folder, n = odd
    bad = make_bad_images(folder)
    calls = []
    res = imaging.load_batch(imaging.list_images(str(folder)), on_error="skip", progress=calls.append)
    assert sorted(res.names) == sorted(n.values())
    assert sorted(e["file"] for e in res.errors) == sorted(bad)
    assert all(e["file"] in e["error"] for e in res.errors)
    assert len(calls) == 12


def test_skip_mode_with_nothing_good_still_raises(tmp_path):
    make_bad_images(tmp_path)
    with pytest.raises(BadInputError, match="None of the 3"):
        imaging.load_batch(imaging.list_images(str(tmp_path)), on_error="skip")
    with pytest.raises(BadInputError, match="no image files"):
        imaging.load_batch([], on_error="skip")


def test_refused_links_count_as_bad_files(numbered, tmp_path):
    os.symlink(solid(tmp_path / "s.png", (2, 2), (0, 0, 0)), numbered / "img0.png")
    files = imaging.list_images(str(numbered))
    with pytest.raises(BadInputError, match="img0.png"):
        imaging.load_batch(files)
    res = imaging.load_batch(files, on_error="skip")
    assert [e["file"] for e in res.errors] == ["img0.png"] and len(res.images) == 5


def _pair(tmp_path, second_size):
    solid(tmp_path / "a1.png", (4, 2), (255, 0, 0))           # W=4, H=2: sets the batch size
    solid(tmp_path / "a2.png", second_size, (0, 0, 255, 255), "RGBA")
    return imaging.list_images(str(tmp_path))


def test_batch_pad_letterboxes_to_first_size(tmp_path):
    res = imaging.load_batch(_pair(tmp_path, (2, 2)), mode="batch", fit="pad")
    assert res.size == (4, 2) and [im.shape for im in res.images] == [(2, 4, 3)] * 2
    im, m = res.images[1], res.masks[1]
    np.testing.assert_allclose(im[:, 1:3], np.broadcast_to([0, 0, 1], (2, 2, 3)), atol=1e-5)
    np.testing.assert_array_equal(im[:, [0, 3]], 0)          # black borders
    np.testing.assert_array_equal(m[:, [0, 3]], 1)           # padding = transparent -> mask 1
    np.testing.assert_allclose(m[:, 1:3], 0, atol=1e-6)      # opaque content -> mask 0
    np.testing.assert_array_equal(res.masks[0], 0)


def test_batch_crop_and_resize(tmp_path):
    res = imaging.load_batch(_pair(tmp_path, (2, 4)), mode="batch", fit="crop")
    assert [im.shape for im in res.images] == [(2, 4, 3)] * 2
    np.testing.assert_allclose(res.images[1], np.broadcast_to([0, 0, 1], (2, 4, 3)), atol=1e-5)
    np.testing.assert_allclose(res.masks[1], 0, atol=1e-6)  # crop never pads
    res = imaging.load_batch(imaging.list_images(str(tmp_path)), mode="batch", fit="resize")
    assert [im.shape for im in res.images] == [(2, 4, 3)] * 2 and [m.shape for m in res.masks] == [(2, 4)] * 2


def test_batch_geometry_letterbox_shrinks_large_images(tmp_path):
    solid(tmp_path / "b1.png", (10, 10), (0, 255, 0))
    solid(tmp_path / "b2.png", (40, 20), (255, 255, 255))
    res = imaging.load_batch(imaging.list_images(str(tmp_path)), mode="batch", fit="pad")
    m = res.masks[1]
    assert m.shape == (10, 10)
    np.testing.assert_array_equal(m[:2], 1)
    np.testing.assert_array_equal(m[8:], 1)
    np.testing.assert_allclose(m[3:7], 0, atol=1e-6)


def test_bad_mode_values(tmp_path):
    for kw in ({"mode": "stack"}, {"fit": "zoom"}, {"on_error": "ignore"}):
        with pytest.raises(BadInputError):
            imaging.load_batch([], **kw)


# ---- fingerprint --------------------------------------------------------------------------------
def test_fingerprint_sees_content_add_and_remove(numbered):
    files = imaging.list_images(str(numbered))
    fp = imaging.fingerprint(files)
    assert fp == imaging.fingerprint(imaging.list_images(str(numbered)))
    target = numbered / "img2.png"
    st0 = os.stat(target)
    data = bytearray(target.read_bytes())
    data[-20] ^= 0xFF                                    # same size, same name, other bytes
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st0.st_atime_ns, st0.st_mtime_ns))  # even with the mtime put back
    fp2 = imaging.fingerprint(imaging.list_images(str(numbered)))
    assert fp2 != fp
    solid(numbered / "img40.png", (2, 2), (0, 0, 0))
    fp3 = imaging.fingerprint(imaging.list_images(str(numbered)))
    assert fp3 != fp2
    os.unlink(numbered / "img40.png")
    assert imaging.fingerprint(imaging.list_images(str(numbered))) == fp2
    os.unlink(numbered / "img1.png")
    assert imaging.fingerprint(imaging.list_images(str(numbered))) != fp2


def test_fingerprint_of_missing_file_does_not_raise(tmp_path):
    assert len(imaging.fingerprint([str(tmp_path / "gone.png")])) == 64


# ---- uploads ------------------------------------------------------------------------------------
def test_select_uploads_names_and_prefix(tmp_path):
    root = tmp_path / "input"
    (root / "req9").mkdir(parents=True)
    for n in ("req7_b.png", "req7_a10.png", "req7_a2.png", "other.png", "req9/x.png", "req9/y.jpg"):
        solid(root / n, (1, 1), (0, 0, 0))
    sel = imaging.select_uploads(str(root), "req7_b.png, other.png\nreq7_b.png")
    assert names_of(sel) == ["req7_b.png", "other.png"] and sel.refused == []
    assert names_of(imaging.select_uploads(str(root), "req7_")) == ["req7_a2.png", "req7_a10.png", "req7_b.png"]
    assert names_of(imaging.select_uploads(str(root), "req9/")) == ["req9/x.png", "req9/y.jpg"]
    assert names_of(imaging.select_uploads(str(root), "req7_a*")) == ["req7_a2.png", "req7_a10.png"]
    sel = imaging.select_uploads(str(root), "other.png, lost.png")
    assert names_of(sel) == ["other.png"] and sel.refused[0]["file"] == "lost.png"
    assert "did not arrive" in sel.refused[0]["error"]
    with pytest.raises(BadInputError, match="req8_"):
        imaging.select_uploads(str(root), "req8_")
    for bad in ("../x.png", "/etc/passwd.png", "%2e%2e/x.png", "a\\b.png", ""):
        with pytest.raises(BadInputError):
            imaging.select_uploads(str(root), bad)


# ---- writing ------------------------------------------------------------------------------------
def test_save_png_atomic_roundtrip(tmp_path):
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, np.arange(4, dtype=np.uint8) * 60
    meta = {"safecut": '{"verdict": "SAFE", "caption": "a mug ☕"}', "source_filename": "x.png"}
    out = imaging.save_png_atomic(str(tmp_path / "sub" / "o.png"), rgba, meta)
    with Image.open(out) as im:
        assert im.mode == "RGBA" and im.text == meta
        np.testing.assert_array_equal(np.asarray(im), rgba)
    assert os.listdir(tmp_path / "sub") == ["o.png"]
    if os.name == "posix":
        assert os.stat(out).st_mode & 0o777 == 0o666 & ~imaging._umask()  # not mkstemp's 0600
    with pytest.raises(FileExistsError):
        imaging.save_png_atomic(out, rgba, meta, overwrite=False)
    assert os.listdir(tmp_path / "sub") == ["o.png"]


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(imaging.SaveError) as ei:
        imaging.save_png_atomic(str(tmp_path / "o.png"), np.zeros((2, 2, 3), np.uint8), {})
    assert "disk is full" in str(ei.value) and "o.png" in str(ei.value)
    assert ei.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []


def test_read_only_file_system_and_encoder_errors(tmp_path, monkeypatch):
    def ro(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkstemp", ro)
        with pytest.raises(imaging.SaveError, match="read-only"):
            imaging.save_png_atomic(str(tmp_path / "o.png"), np.zeros((2, 2, 3), np.uint8), {})

    def broken(fh):
        fh.write(b"half")
        raise ValueError("encoder failed")
    with pytest.raises(ValueError):
        imaging.atomic_write(str(tmp_path / "o.json"), broken)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(IS_ROOT or sys.platform == "win32", reason="root ignores directory permissions")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(imaging.SaveError, match="permission denied"):
            imaging.save_png_atomic(str(ro / "o.png"), np.zeros((2, 2, 3), np.uint8), {})
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("raw,expect", [
    ("a/b\\c", "a_b_c"), ("..", "image"), ("../../etc/passwd", "_._etc_passwd"), ("x\x00y\n", "x_y_"),
    ("  .hidden. ", "hidden"), ("CON", "_CON"), ("q?*:<>|\"", "q_______"), ("", "image"),
])
def test_sanitize_filename(raw, expect):
    got = imaging.sanitize_filename(raw)
    assert got == expect
    assert "/" not in got and "\\" not in got and ".." not in got


def test_sanitize_filename_caps_length():
    got = imaging.sanitize_filename("ä" * 500)
    assert len(got) <= 100 and len(got.encode()) <= 200


def test_resolve_output_prefix(tmp_path):
    out = tmp_path / "output"
    out.mkdir()
    folder, sub, base = imaging.resolve_output_prefix(str(out), "safecut/run 1/cut")
    assert (folder, sub, base) == (str(out / "safecut" / "run 1"), "safecut/run 1", "cut")
    assert imaging.resolve_output_prefix(str(out), "")[1:] == ("safecut", "cutout")
    assert imaging.resolve_output_prefix(str(out), "plain")[1:] == ("", "plain")
    for bad in ("../x", "/abs/x", "a/../../x", "%2e%2e/x"):
        with pytest.raises(BadInputError):
            imaging.resolve_output_prefix(str(out), bad)
    os.symlink(tmp_path, out / "link")
    with pytest.raises(BadInputError, match="symbolic link"):
        imaging.resolve_output_prefix(str(out), "link/x")
