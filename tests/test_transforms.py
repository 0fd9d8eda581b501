"""Transform registry: every transform's values, chain parsing and its errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline import transforms
from pipeline.transforms import (
    REGISTRY,
    SEPIA_BGR,
    Chain,
    Param,
    TransformError,
    describe,
    parse_spec,
    scale_boxes,
)

H, W = 96, 128


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """Colour gradients plus a filled rectangle and circle: edges, flats and ramps."""
    yy, xx = np.mgrid[0:H, 0:W]
    out = np.dstack([xx * 2, yy * 2, 255 - xx]).astype(np.uint8)
    cv2.rectangle(out, (20, 20), (60, 70), (30, 200, 90), -1)
    cv2.circle(out, (95, 45), 20, (240, 240, 240), -1)
    return out


@pytest.fixture(scope="module")
def noisy() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)


def run(spec: str, image: np.ndarray) -> np.ndarray:
    return parse_spec(spec)(image)


# ------------------------------------------------------------------ every transform

@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_transform_is_pure_and_returns_bgr_uint8(name, scene):
    before = scene.copy()
    out = run(name, scene)
    assert np.array_equal(scene, before), f"{name} modified its input"
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[:2] == parse_spec(name).output_size(H, W)


def test_gray_and_bgra_input_become_bgr(scene):
    gray = cv2.cvtColor(scene, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(run("identity", gray), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    bgra = cv2.cvtColor(scene, cv2.COLOR_BGR2BGRA)
    assert np.array_equal(run("invert", bgra), 255 - scene)
    with pytest.raises(TransformError):
        run("invert", scene.astype(np.float32))
    with pytest.raises(TransformError):
        run("invert", np.zeros((4, 4, 2), np.uint8))


# ---------------------------------------------------------------------- pointwise

def test_grayscale_channels_equal_cvtcolor(scene):
    out = run("grayscale", scene)
    gray = cv2.cvtColor(scene, cv2.COLOR_BGR2GRAY)
    for channel in range(3):
        assert np.array_equal(out[..., channel], gray)


def test_invert_values_and_twice_is_identity(scene):
    assert np.array_equal(run("invert", scene), 255 - scene)
    assert np.array_equal(run("invert|invert", scene), scene)


def test_sepia_matrix_on_known_pixels():
    pixels = np.array([[[10, 20, 30], [255, 255, 255], [0, 0, 0]]], np.uint8)  # BGR
    out = run("sepia", pixels)
    # R' = .393R + .769G + .189B = 29.06; G' = 25.87; B' = 20.15 (input R=30, G=20, B=10)
    assert out[0, 0].tolist() == [20, 26, 29]
    assert out[0, 1].tolist() == [239, 255, 255]  # saturated, blue 0.937 * 255
    assert out[0, 2].tolist() == [0, 0, 0]
    assert SEPIA_BGR.shape == (3, 3)


def test_brightness_and_contrast_saturate():
    ramp = np.array([[[0, 100, 250]]], np.uint8)
    assert run("brightness", ramp)[0, 0].tolist() == [40, 140, 255]
    assert run("brightness:beta=-50", ramp)[0, 0].tolist() == [0, 50, 200]
    assert run("contrast", ramp)[0, 0].tolist() == [0, 86, 255]  # 1.5 * x - 64
    assert run("contrast:alpha=1:beta=0", ramp)[0, 0].tolist() == [0, 100, 250]


# ------------------------------------------------------------------ neighbourhood

def test_blur_reduces_variance_and_matches_opencv(noisy):
    out = run("blur:ksize=9", noisy)
    assert out.std() < noisy.std() / 3
    assert np.array_equal(out, cv2.GaussianBlur(noisy, (9, 9), 0))
    assert np.array_equal(run("blur:ksize=1", noisy), noisy)


def test_median_removes_salt_keeps_edges(scene):
    salted = scene.copy()
    salted[10, 10] = salted[50, 40] = 255
    out = run("median:ksize=3", salted)
    assert np.array_equal(out[10, 10], scene[10, 10]) and np.array_equal(out[50, 40], scene[50, 40])
    # The flat rectangle survives up to its edge: the majority of every 3x3 window is inside.
    assert (out[21:70, 20:60] == (30, 200, 90)).all()


def test_sharpen_overshoots_at_edges_and_amount_zero_is_identity():
    step = np.full((20, 40, 3), 100, np.uint8)
    step[:, 20:] = 150
    out = run("sharpen:amount=1.5", step)
    assert out.min() < 100 and out.max() > 150
    assert np.array_equal(out[:, :10], step[:, :10])  # flat areas unchanged
    assert np.array_equal(run("sharpen:amount=0", step), step)


def test_sobel_zero_on_flat_strong_on_edge():
    step = np.zeros((20, 40, 3), np.uint8)
    step[:, 20:] = 200
    out = run("sobel", step)
    assert (out[:, :18] == 0).all() and (out[:, 22:] == 0).all()
    assert (out[:, 19:21] == 255).all()  # |dx| = 4 * 200 saturates
    assert np.array_equal(out[..., 0], out[..., 2])


def test_edges_outline_shapes_only(scene):
    flat = np.full((H, W, 3), 77, np.uint8)
    assert not run("edges", flat).any()
    out = run("edges", scene)
    assert set(np.unique(out)) <= {0, 255}
    assert out[19:21, 40].all(axis=1).any() and not out[45, 40].any()  # top edge on, inside off
    assert np.array_equal(out[..., 0], out[..., 1])
    gray = cv2.cvtColor(scene, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(out[..., 0], cv2.Canny(gray, 100, 200))


def test_pixelate_blocks_are_constant_means(noisy):
    out = run("pixelate:block=16", noisy)
    for y in range(0, H, 16):
        for x in range(0, W, 16):
            block = out[y:y + 16, x:x + 16].reshape(-1, 3)
            assert (block == block[0]).all()
            mean = noisy[y:y + 16, x:x + 16].reshape(-1, 3).mean(axis=0)
            assert np.abs(block[0] - mean).max() <= 0.5
    # A partial cell at the border averages only the pixels it has.
    odd = run("pixelate:block=10", noisy[:25, :25])
    assert np.abs(odd[20, 20].astype(float) - noisy[20:25, 20:25].reshape(-1, 3).mean(0)).max() <= 0.5
    assert np.array_equal(run("pixelate:block=1", noisy), noisy)


def test_cartoon_posterises_and_outlines(scene):
    out = run("cartoon:levels=4", scene)
    assert len(np.unique(out)) <= 5  # 4 levels per channel, plus black outline
    assert (out == 0).all(axis=2).any()
    assert not (out[45, 40] == 0).all()  # the flat rectangle's interior is not an outline


# ----------------------------------------------------------------------- geometry

def test_rotations_match_numpy_and_four_quarters_are_identity(scene):
    assert np.array_equal(run("rotate90", scene), np.rot90(scene, -1))
    assert np.array_equal(run("rotate180", scene), np.rot90(scene, 2))
    assert np.array_equal(run("rotate270", scene), np.rot90(scene, 1))
    assert np.array_equal(run("rotate90,rotate90,rotate90,rotate90", scene), scene)
    assert np.array_equal(run("rotate90|rotate270", scene), scene)


def test_flips(scene):
    assert np.array_equal(run("flip", scene), scene[:, ::-1])
    assert np.array_equal(run("flip:axis=v", scene), scene[::-1])
    assert np.array_equal(run("flip:axis=both", scene), scene[::-1, ::-1])
    assert np.array_equal(run("flip,flip", scene), scene)


def test_resize_sizes_and_nearest_upscale_repeats(scene):
    assert run("resize", scene).shape == (48, 64, 3)
    assert run("resize:factor=0.3", scene[:11, :11]).shape == (3, 3, 3)  # 3.3 rounds to 3
    assert run("upscale:factor=3", scene).shape == (288, 384, 3)
    nearest = run("upscale:factor=2:interpolation=nearest", scene)
    assert np.array_equal(nearest, scene.repeat(2, 0).repeat(2, 1))
    flat = np.full((10, 10, 3), 90, np.uint8)
    for method in transforms.INTERPOLATIONS:
        assert (run(f"upscale:interpolation={method}", flat) == 90).all()


# --------------------------------------------------------------------- background

def test_bgremove_keeps_moving_object_replaces_background():
    rng = np.random.default_rng(5)
    background = np.full((60, 80, 3), 120, np.uint8)
    chain = parse_spec("bgremove:color=0000ff")
    for _ in range(30):
        chain(np.clip(background + rng.integers(-2, 3, background.shape), 0, 255).astype(np.uint8))
    frame = background.copy()
    frame[20:40, 30:50] = (0, 255, 255)
    out = chain(frame)
    assert (out[22:38, 32:48] == (0, 255, 255)).all()
    assert (out[:15] == (255, 0, 0)).all() and (out[45:] == (255, 0, 0)).all()  # blue, BGR
    # State belongs to the chain: a fresh one has learnt nothing and sees it all as new.
    fresh = parse_spec("bgremove:color=0000ff")(frame)
    assert not np.array_equal(fresh, out)


def test_bgreplace_otsu_colour_and_backdrop():
    frame = np.full((60, 80, 3), 220, np.uint8)
    cv2.rectangle(frame, (25, 15), (55, 45), (40, 30, 20), -1)
    out = run("bgreplace:method=otsu:color=ff0000", frame)
    assert (out[20:40, 30:50] == (40, 30, 20)).all()
    assert (out[:10] == (0, 0, 255)).all()  # red in BGR
    out = run("bgreplace:method=otsu:backdrop=checker", frame)
    assert (out[20:40, 30:50] == (40, 30, 20)).all()
    assert set(np.unique(out[:10])) == {150, 205}  # the two grays of the checkerboard


@pytest.mark.parametrize("path", ["/etc/passwd", "sample_media/sample.png", "/no/such/file.png"])
def test_bgreplace_names_no_file(path):
    # Specs come from uploads: a background is one of the built-in names, never a path.
    with pytest.raises(TransformError, match="unknown parameter 'image'"):
        parse_spec(f"bgreplace:image={path}")
    with pytest.raises(TransformError, match="backdrop must be one of none, gradient, checker, stripes"):
        parse_spec(f"bgreplace:backdrop={path}")


def test_bgreplace_grabcut_separates_object_from_textured_background():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 60, (90, 120, 3), dtype=np.uint8)
    frame[..., 0] += 150  # bluish noise background
    cv2.circle(frame, (60, 45), 25, (20, 40, 230), -1)  # a red disc in the middle
    out = run("bgreplace:color=00ff00", frame)
    green = (out == (0, 255, 0)).all(axis=2)
    assert green[:10].mean() > 0.95 and green[:, :15].mean() > 0.95
    assert green[35:55, 50:70].mean() < 0.05


# -------------------------------------------------------------------------- faces

def test_face_cascade_loads_and_finds_nothing_in_a_scene(scene):
    assert not transforms.load_face_cascade().empty()
    assert np.array_equal(run("faces", scene), scene)
    assert np.array_equal(run("faceblur", scene), scene)


def test_scale_boxes_maps_back_and_clips():
    assert scale_boxes([(10, 20, 30, 40)], 0.5, (200, 300, 3)) == [(20, 40, 60, 80)]
    assert scale_boxes([(140, 90, 20, 20)], 0.5, (200, 300)) == [(280, 180, 20, 20)]
    assert scale_boxes([], 0.5, (200, 300)) == []


class FakeCascade:
    """Stands in for the Haar cascade: no face image ships with any installed package."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, ...]] = []

    def detectMultiScale(self, gray, **kwargs):  # OpenCV spells it this way
        self.seen.append(gray.shape)
        return np.array([[10, 10, 20, 20]])


def test_faces_detect_on_downscaled_copy_and_draw_in_full_size(monkeypatch, noisy):
    fake = FakeCascade()
    monkeypatch.setattr(transforms.faces, "load_face_cascade", lambda: fake)
    frame = np.zeros((120, 160, 3), np.uint8)
    out = run("faces:detect_width=80:color=ff0000:thickness=1", frame)
    assert fake.seen == [(60, 80)]
    # (10, 10, 20, 20) on the half-size copy is (20, 20, 40, 40) here.
    assert out[20, 20:60].tolist() == [[0, 0, 255]] * 40 and out[59, 20].tolist() == [0, 0, 255]
    assert not out[21:59, 21:59].any() and not out[61:].any()

    image = cv2.resize(noisy, (160, 120))
    blurred = run("faceblur:detect_width=80", image)
    assert blurred[20:60, 20:60].std() < image[20:60, 20:60].std() / 2
    untouched = np.ones(image.shape[:2], bool)
    untouched[20:60, 20:60] = False
    assert np.array_equal(blurred[untouched], image[untouched])


# ----------------------------------------------------------------------- overlays

def test_label_draws_in_its_corner_only(scene):
    big = cv2.resize(scene, (640, 360))
    changed = (run("label:text=Hello%2C world:pos=tr", big) != big).any(axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.any() and ys.max() < 60 and xs.min() > 400
    assert parse_spec("label:text=Hello%2C world").spec == "label:text=Hello%2C%20world"


def test_timestamp_draws_bottom_left(scene):
    big = cv2.resize(scene, (640, 360))
    changed = (run("timestamp", big) != big).any(axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.any() and ys.min() > 300 and xs.max() < 400


# ------------------------------------------------------------------------ parsing

def test_spec_separators_case_and_canonical_form():
    chain = parse_spec(" Grayscale | blur:ksize=9:sigma=2 ,edges:low=50 ")
    assert [t.name for t, _ in chain.steps] == ["grayscale", "blur", "edges"]
    assert chain.steps[1][1] == {"ksize": 9, "sigma": 2.0}
    assert chain.spec == "grayscale,blur:sigma=2.0,edges:low=50"
    assert parse_spec(chain.spec).spec == chain.spec
    assert parse_spec("grayscale,,blur,").spec == "grayscale,blur"  # empty steps are skipped


@pytest.mark.parametrize("spec", ["", "  ", "none", "identity", "IDENTITY"])
def test_identity_specs(spec, scene):
    chain = parse_spec(spec)
    assert len(chain) == 0 and chain.spec == "identity" and chain(scene) is scene
    assert chain.halo == 0 and chain.tileable


def test_bool_and_typed_values():
    assert parse_spec("timestamp:utc=yes").steps[0][1]["utc"] is True
    assert parse_spec("timestamp:utc=0").steps[0][1]["utc"] is False
    assert Chain([("blur", {"ksize": 5})]).spec == "blur:ksize=5"
    assert REGISTRY["blur"].halo({"ksize": 7}) == 3
    assert REGISTRY["upscale"].geometry({"factor": 3}).out_size((2, 5)) == (6, 15)


@pytest.mark.parametrize("spec, message", [
    ("blurr", "unknown transform 'blurr'; valid: bgremove, bgreplace, blur,"),
    ("blur:size=3", "blur: unknown parameter 'size'; valid: ksize, sigma"),
    ("grayscale:x=1", "grayscale: unknown parameter 'x'; valid: none"),
    ("blur:ksize=8", "blur: ksize must be odd, got 8"),
    ("blur:ksize=abc", "blur: ksize must be int, got 'abc'"),
    ("blur:ksize=9.5", "blur: ksize must be int"),
    ("blur:ksize=101", "blur: ksize must be in 1..99, got 101"),
    ("blur:9", "blur: expected key=value, got '9'"),
    ("blur:ksize=3:ksize=5", "blur: parameter 'ksize' given twice"),
    ("flip:axis=x", "flip: axis must be one of h, v, both; got 'x'"),
    ("upscale:interpolation=bicubic", "must be one of nearest, linear, cubic, lanczos, area"),
    ("timestamp:utc=maybe", "timestamp: utc must be bool"),
    ("sharpen:amount=nan", "sharpen: amount must be finite"),
    ("edges:low=300:high=100", "edges: low (300) must not exceed high (100)"),
    ("bgreplace:color=green", "bgreplace: color must be RRGGBB hex"),
])
def test_bad_specs_raise_one_clear_line(spec, message):
    with pytest.raises(TransformError) as caught:
        parse_spec(spec)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_each_chain_owns_fresh_state():
    first, second = parse_spec("bgremove"), parse_spec("bgremove")
    assert first._fns[0] is not second._fns[0]


def test_param_validation_for_python_values():
    ksize = Param("ksize", int, 3, "k", min=1, max=9, odd=True)
    assert ksize.convert(5, "t") == 5
    with pytest.raises(TransformError):
        ksize.convert(True, "t")
    assert Param("f", float, 1.0, "f").convert(2, "t") == 2.0


def test_describe_lists_every_transform_and_param():
    text = describe()
    for name, transform in REGISTRY.items():
        assert f"\n{name}  [" in text
        for param in transform.params:
            assert f"    {param.name}: {param.type.__name__} = " in text
    assert "ksize: int = 9 (odd, 1..99)  kernel size in pixels" in text
