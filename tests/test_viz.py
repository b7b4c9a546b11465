"""Tests for course_lib.viz: grids, plots, animations and the noising widget, all headless."""

from __future__ import annotations

import math
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.animation import FuncAnimation  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from course_lib import viz  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _fake_schedule(name: str, num_steps: int = 1000, beta_start=1e-4, beta_end=0.02):
    """A stand-in for NoiseSchedule with just what viz reads (alphas_cumprod, snr, name)."""
    betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    return SimpleNamespace(
        name=name, num_steps=num_steps, betas=betas, alphas_cumprod=abar, snr=abar / (1 - abar)
    )


def _images(n=6, c=1, h=4, w=5):
    return torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c, h, w) / (n * c * h * w) * 2 - 1


# ---------------------------------------------------------------------------------------------
# make_grid
# ---------------------------------------------------------------------------------------------


def test_make_grid_shape_and_placement_greyscale():
    x = _images(n=5, h=4, w=3)
    g = viz.make_grid(x, nrow=2, padding=1, pad_value=9.0)
    # 3 rows, 2 columns: H = 3·(4+1)+1, W = 2·(3+1)+1
    assert g.shape == (16, 9) and g.dtype == np.float32
    for k in range(5):
        r, c = divmod(k, 2)
        y0, x0 = 1 + r * 5, 1 + c * 4
        np.testing.assert_array_equal(g[y0 : y0 + 4, x0 : x0 + 3], x[k, 0].numpy())
    # padding lines and the empty 6th cell hold pad_value
    assert (g[0, :] == 9).all() and (g[:, 0] == 9).all() and (g[5, :] == 9).all()
    assert (g[11:15, 5:8] == 9).all()


def test_make_grid_rgb_and_defaults():
    x = _images(n=7, c=3, h=2, w=2)
    g = viz.make_grid(x, padding=0)
    assert g.shape == (3 * 2, 3 * 2, 3)  # nrow = ceil(sqrt(7)) = 3
    np.testing.assert_array_equal(g[0:2, 2:4, :], x[1].permute(1, 2, 0).numpy())
    one_row = viz.make_grid(x, nrow=100, padding=2)
    assert one_row.shape == (2 + 2 + 2, 7 * 4 + 2, 3)  # nrow larger than N: a single row of N


def test_make_grid_accepts_numpy_and_grad_tensors():
    x = _images(4).requires_grad_()
    g1 = viz.make_grid(x, nrow=2)
    g2 = viz.make_grid(x.detach().numpy(), nrow=2)
    np.testing.assert_array_equal(g1, g2)


@pytest.mark.parametrize(
    "images, kwargs, match",
    [
        (torch.zeros(3, 8, 8), {}, "N×C×H×W"),
        (torch.zeros(2, 2, 8, 8), {}, "1 or 3 channels"),
        (torch.zeros(0, 1, 8, 8), {}, "at least one"),
        (torch.full((2, 1, 4, 4), float("nan")), {}, "NaN"),
        (torch.zeros(2, 1, 4, 4), {"nrow": 0}, "nrow"),
        (torch.zeros(2, 1, 4, 4), {"padding": -1}, "padding"),
        ([1, 2, 3], {}, "torch.Tensor"),
    ],
)
def test_make_grid_bad_input(images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.make_grid(images, **kwargs)


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------


def test_show_images_returns_figure():
    x = torch.rand(10, 1, 32, 32) * 2 - 1
    fig = viz.show_images(x, nrow=5, title="samples", labels=[f"c{i}" for i in range(10)])
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title() == "samples"
    assert [t.get_text() for t in ax.texts] == [f"c{i}" for i in range(10)]
    shown = ax.images[0].get_array()
    plain = viz.make_grid(x, nrow=5)
    assert shown.shape[1] == plain.shape[1] and shown.shape[0] > plain.shape[0]  # room for the labels
    assert float(shown.min()) >= 0.0 and float(shown.max()) <= 1.0  # mapped to [0, 1] for display
    # the labels sit above their tiles, not on another image
    tile_top = [t.get_position()[1] for t in ax.texts]
    assert tile_top[0] == tile_top[4] < tile_top[5]


def test_show_images_without_labels_shows_make_grid():
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    fig = viz.show_images(x, nrow=3)
    np.testing.assert_allclose(
        fig.axes[0].images[0].get_array(), (viz.make_grid(x, nrow=3) + 1) / 2, atol=1e-6
    )


def test_show_images_into_given_axes_and_rgb():
    fig, axes = plt.subplots(1, 2)
    out = viz.show_images(torch.rand(4, 3, 8, 8) * 2 - 1, ax=axes[1])
    assert out is fig
    assert len(axes[1].images) == 1 and len(axes[0].images) == 0


def test_show_images_bad_labels():
    with pytest.raises(ValueError, match="one entry per image"):
        viz.show_images(torch.zeros(3, 1, 8, 8), labels=["a", "b"])
    with pytest.raises(ValueError, match="one entry per row of the grid \\(2\\), got 3"):
        viz.show_images(torch.zeros(6, 1, 8, 8), nrow=4, row_labels=["a", "b", "c"])


def test_row_labels_sit_left_of_their_rows_inside_the_figure():
    x = torch.rand(6, 1, 32, 32) * 2 - 1
    fig = viz.show_images(x, nrow=3, row_labels=["a sneaker", "a pair of trousers"])
    ax = fig.axes[0]
    texts = {t.get_text(): t for t in ax.texts}
    assert set(texts) == {"a sneaker", "a pair of trousers"}
    first, second = (texts[k].get_position() for k in ("a sneaker", "a pair of trousers"))
    assert first[0] < 0 and second[0] < 0 and 0 < first[1] < 32 + 2 < second[1] < 2 * (32 + 2) + 2
    # the axes leave room at the left, so the longest caption is not cut off by the figure's edge
    fig.canvas.draw()
    box = texts["a pair of trousers"].get_window_extent()
    assert box.x0 >= 0, box


def test_plot_schedules_dict_and_list():
    lin = _fake_schedule("linear")
    other = _fake_schedule("steep", beta_end=0.04)
    fig = viz.plot_schedules({"linear": lin, "steep": other})
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    ax_a, ax_s = fig.axes
    abar_line = ax_a.get_lines()[0]
    np.testing.assert_allclose(abar_line.get_ydata(), lin.alphas_cumprod.numpy())
    snr_db = ax_s.get_lines()[0].get_ydata()
    np.testing.assert_allclose(snr_db, 10 * np.log10(lin.snr.numpy()), rtol=1e-9)
    # the 0 dB reference line is there
    assert any(np.allclose(line.get_ydata(), 0.0) for line in ax_s.get_lines())
    fig2 = viz.plot_schedules([lin, other])
    assert [t.get_text() for t in fig2.axes[0].get_legend().get_texts()] == ["linear", "steep"]


def test_plot_schedules_real_noise_schedule():
    schedules = pytest.importorskip("course_lib.schedules")
    S = schedules.NoiseSchedule
    fig = viz.plot_schedules([S.linear(), S.cosine()])
    assert isinstance(fig, Figure)
    labels = [t.get_text() for t in fig.axes[1].texts]
    # the 0 dB crossings are annotated: linear near t ≈ 250, cosine near t ≈ 500
    steps = sorted(int(s.removeprefix("t=")) for s in labels)
    assert 200 < steps[0] < 300 and 450 < steps[1] < 550


@pytest.mark.parametrize("bad, match", [({}, "empty"), ([object()], "alphas_cumprod"), (3, "dict")])
def test_plot_schedules_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        viz.plot_schedules(bad)


def test_plot_loss_smooths():
    rng = np.random.default_rng(0)
    losses = 1.0 / np.arange(1, 201) + 0.05 * rng.random(200)
    fig = viz.plot_loss(losses, smooth=0.9)
    assert isinstance(fig, Figure)
    raw, ema = fig.axes[0].get_lines()[:2]
    np.testing.assert_allclose(raw.get_ydata(), losses)
    smoothed = ema.get_ydata()
    assert smoothed[0] == pytest.approx(losses[0])  # debiased: starts at the first value
    assert np.std(np.diff(smoothed[50:])) < np.std(np.diff(losses[50:]))
    assert fig.axes[0].get_yscale() == "log"  # spans > 10×


def test_plot_loss_dict_and_nan():
    fig = viz.plot_loss({"train": [1.0, 0.5, float("nan"), 0.4], "val": torch.tensor([0.9, 0.8])}, smooth=0)
    assert len(fig.axes[0].get_lines()) == 2
    assert fig.axes[0].get_yscale() == "linear"
    fig = viz.plot_loss([1.0, float("nan"), 0.5], smooth=0.5)
    assert np.isfinite(fig.axes[0].get_lines()[1].get_ydata()).all()


@pytest.mark.parametrize(
    "history, kwargs, match",
    [
        ([], {}, "non-empty"),
        ({}, {}, "empty"),
        ([[1, 2], [3, 4]], {}, "1-D"),
        (["a", "b"], {}, "numbers"),
        ([1.0, 2.0], {"smooth": 1.0}, "smooth"),
    ],
)
def test_plot_loss_bad_input(history, kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.plot_loss(history, **kwargs)


# ---------------------------------------------------------------------------------------------
# animations
# ---------------------------------------------------------------------------------------------


def _trajectory(steps=5, n=4):
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(n, 1, 8, 8, generator=g)
    return [(1 - k / (steps - 1)) * noise.clamp(-1, 1) + (k / (steps - 1)) * x0 for k in range(steps)]


def test_animate_trajectory_frames():
    frames = _trajectory(5)
    anim = viz.animate_trajectory(frames, interval=50, titles=[f"t = {t}" for t in (4, 3, 2, 1, 0)])
    assert isinstance(anim, FuncAnimation)
    fig = anim._fig
    ax = fig.axes[0]
    anim._func(4)  # draw the last frame
    np.testing.assert_allclose(ax.images[0].get_array(), viz.to_unit(viz.make_grid(frames[-1])))
    assert ax.get_title() == "t = 0"
    anim._draw_was_started = True  # drawn by hand above; silences matplotlib's "never rendered" warning


def test_animate_trajectory_subsamples_and_accepts_5d():
    frames = torch.stack(_trajectory(30))
    anim = viz.animate_trajectory(frames, max_frames=10)
    assert len(list(anim.new_frame_seq())) == 10
    anim._func(9)
    assert anim._fig.axes[0].get_title() == "step 30/30"  # the last frame is always kept
    anim._draw_was_started = True


def test_trajectory_html_headless():
    html = viz.trajectory_html(_trajectory(3), interval=100)
    assert "<script" in html.data and "animation" in html.data.lower()
    assert plt.get_fignums() == []  # the figure was closed


@pytest.mark.parametrize(
    "frames, match",
    [
        ([], "empty"),
        (torch.zeros(4, 1, 8, 8), "list"),
        ([torch.zeros(2, 1, 8, 8), torch.zeros(3, 1, 8, 8)], "same shape"),
        ([torch.zeros(2, 8, 8)], "N×C×H×W"),
    ],
)
def test_animate_trajectory_bad_input(frames, match):
    with pytest.raises(ValueError, match=match):
        viz.animate_trajectory(frames)


def test_animate_trajectory_bad_titles():
    with pytest.raises(ValueError, match="one entry per frame"):
        viz.animate_trajectory(_trajectory(3), titles=["a"])


# ---------------------------------------------------------------------------------------------
# the noising widget
# ---------------------------------------------------------------------------------------------


def test_noising_slider_constructs_and_updates():
    x0 = torch.rand(1, 32, 32) * 2 - 1  # a single C×H×W image
    lin, steep = _fake_schedule("linear"), _fake_schedule("steep", num_steps=500, beta_end=0.04)
    w = viz.noising_slider(x0, {"linear": lin, "steep": steep}, seed=3)
    import ipywidgets

    assert isinstance(w, ipywidgets.VBox)
    assert w.t_slider.value == 499 and w.t_slider.max == 999
    png0 = w.image.value
    assert png0[:4] == b"\x89PNG"

    w.t_slider.value = 10
    abar = float(lin.alphas_cumprod[10])
    assert w.state["t"] == 10 and w.state["schedule"] == "linear"
    assert w.state["abar"] == pytest.approx(abar)
    assert w.state["snr_db"] == pytest.approx(10 * math.log10(abar / (1 - abar)))
    assert f"{abar:.4f}" in w.info.value
    assert w.image.value != png0

    # the noise is fixed: x_t is exactly sqrt(abar) x0 + sqrt(1 - abar) eps with the same eps at every t
    xt10 = w.state["x_t"]
    w.t_slider.value = 700
    abar7 = float(lin.alphas_cumprod[700])
    xt700 = w.state["x_t"]
    eps10 = (xt10.double() - math.sqrt(abar) * x0.double()) / math.sqrt(1 - abar)
    eps700 = (xt700.double() - math.sqrt(abar7) * x0.double()) / math.sqrt(1 - abar7)
    torch.testing.assert_close(eps10, eps700, atol=1e-5, rtol=1e-5)

    # at t = 0 the noised panel is not titled x_0, the clean image's name (t = 0 is already one step of noise)
    w.t_slider.value = 0
    assert w.state["titles"] == ("$x_0$ (clean)", "$x_t$ at $t = 0$")
    w.t_slider.value = 700

    # switching to a shorter schedule clamps t into its range
    w.schedule_dropdown.value = "steep"
    assert w.t_slider.max == 499 and w.state["t"] == 499
    assert w.state["abar"] == pytest.approx(float(steep.alphas_cumprod[499]))


def test_noising_slider_with_real_schedules():
    schedules = pytest.importorskip("course_lib.schedules")
    S = schedules.NoiseSchedule
    x0 = torch.rand(4, 1, 32, 32) * 2 - 1
    w = viz.noising_slider(x0, [S.linear(), S.cosine()], t=500)
    assert w.state["abar"] == pytest.approx(float(S.linear().alphas_cumprod[500]))
    w.schedule_dropdown.value = "cosine"
    assert w.state["abar"] == pytest.approx(float(S.cosine().alphas_cumprod[500]))


@pytest.mark.parametrize(
    "x0, kwargs, match",
    [
        (torch.zeros(8, 8), {}, "N×C×H×W"),
        ([0.0], {}, "tensor"),
        (torch.zeros(1, 1, 8, 8), {"t": 5000}, "t must be"),
        (torch.zeros(1, 1, 8, 8), {"schedules": []}, "empty"),
    ],
)
def test_noising_slider_bad_input(x0, kwargs, match):
    kwargs.setdefault("schedules", [_fake_schedule("linear")])
    with pytest.raises(ValueError, match=match):
        viz.noising_slider(x0, **kwargs)


def test_plot_loss_takes_a_list_of_scalar_tensors_and_bf16():
    """``losses.append(loss.detach())`` gives a list of 0-d tensors (on a GPU numpy cannot read them one by one),
    and a bf16 history has no numpy dtype: both plot as their values."""
    values = [torch.tensor(1.0), torch.tensor(0.5, dtype=torch.bfloat16), 0.25]
    fig = viz.plot_loss(values, smooth=0)
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), [1.0, 0.5, 0.25])
    fig = viz.plot_loss(torch.tensor([1.0, 0.5], dtype=torch.bfloat16), smooth=0)
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), [1.0, 0.5])


# ---------------------------------------------------------------------------------------------
# the guidance widget
# ---------------------------------------------------------------------------------------------


def test_guidance_slider_shows_what_generate_returns_for_each_scale():
    import ipywidgets

    calls = []

    def generate(s):  # a stand-in sampler: images whose brightness is the scale, so each grid differs
        calls.append(s)
        return torch.full((4, 1, 8, 8), s / 10 * 2 - 1)

    w = viz.guidance_slider(generate, s=3.0)
    assert isinstance(w, ipywidgets.VBox) and calls == [3.0]
    assert w.state["s"] == 3.0 and torch.equal(w.state["images"], generate(3.0))
    png3 = w.image.value
    assert png3[:4] == b"\x89PNG" and "s = 3" in w.caption.value
    calls.clear()
    w.slider.value = 7.5
    assert calls == [7.5] and w.state["s"] == 7.5 and w.state["seconds"] >= 0
    assert torch.equal(w.state["images"], generate(7.5)) and w.image.value != png3
    assert "s = 7.5" in w.caption.value

    given = torch.zeros(2, 1, 8, 8)  # first images handed in (a sweep's row): generate is not called for them
    calls.clear()
    w = viz.guidance_slider(generate, s=1.0, images=given)
    assert calls == [] and w.state["images"] is given and w.state["seconds"] is None


def test_guidance_slider_bad_input_says_what_was_expected():
    images = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="generate must be a callable"):
        viz.guidance_slider(images)
    with pytest.raises(ValueError, match=r"s must be a number in \[0, s_max = 10\], got 12"):
        viz.guidance_slider(lambda s: images, s=12)
    with pytest.raises(ValueError, match="step must be a positive number"):
        viz.guidance_slider(lambda s: images, step=0)
    with pytest.raises(ValueError, match="generate"):  # what generate returned is checked like any images
        viz.guidance_slider(lambda s: torch.zeros(8, 8, 8, 8))


def test_show_images_refuses_0_to_255_pixels_but_shows_overshooting_samples():
    """0..255 pixels would be clipped to a white square; raw diffusion samples overshoot [-1, 1] both ways."""

    x = _images()
    with pytest.raises(ValueError, match=r"must be in \[-1, 1\] to show.*\(uint8\): 0..255 pixels\?"):
        viz.show_images(((x + 1) * 127.5).to(torch.uint8))
    with pytest.raises(ValueError, match=r"got values from 0 to 252.875: 0..255 pixels\?"):
        viz.show_images(((x + 1) * 127.5).numpy())
    with pytest.raises(ValueError, match="x0 must be in \\[-1, 1\\] to show"):
        viz.noising_slider(((x[:1] + 1) * 127.5).to(torch.uint8), {"linear": _fake_schedule("linear")})
    assert viz.show_images(x * 40) is not None  # an unclamped sample set: far outside [-1, 1], both signs
    assert viz.show_images((x + 1) / 2) is not None  # [0, 1]: shown as it is
