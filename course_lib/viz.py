r"""Pictures for the course: image grids, schedule plots, loss curves, denoising animations, widgets.

Every function takes course tensors as they are (N×C×H×W in [-1, 1], on any device, with or
without grad) and returns a matplotlib object, so a notebook cell shows it and a test can
close it. Nothing here needs a display: under the Agg backend everything renders to memory,
and animations become HTML+JavaScript (``to_jshtml``), so no ffmpeg is needed.

    show_images(samples[:16], nrow=8, title="samples")
    plot_schedules({"linear": NoiseSchedule.linear(), "cosine": NoiseSchedule.cosine()})
    plot_loss(history["loss"], smooth=0.98)
    trajectory_html(frames)                  # a denoising trajectory as an animation
    noising_slider(x0, [NoiseSchedule.linear(), NoiseSchedule.cosine()])
    guidance_slider(lambda s: sample(model, schedule, 10, prompt=prompts, guidance_scale=s, seed=0))
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "animate_trajectory",
    "make_grid",
    "noising_slider",
    "plot_loss",
    "plot_schedules",
    "show_images",
    "to_unit",
    "trajectory_html",
]


# ---------------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------------


def _to_numpy_images(images, name: str = "images") -> np.ndarray:
    """Validate N×C×H×W (C = 1 or 3) and return a float32 numpy copy."""
    if isinstance(images, torch.Tensor):
        images = images.detach().to("cpu", torch.float32).numpy()
    elif isinstance(images, np.ndarray):
        images = images.astype(np.float32, copy=False)
    else:
        raise ValueError(f"{name} must be a torch.Tensor or numpy array N×C×H×W, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{name} must be N×C×H×W, got {images.ndim} dims (shape {images.shape})")
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise ValueError(f"{name} must have 1 or 3 channels (N×C×H×W), got C = {c} (shape {images.shape})")
    if n < 1 or h < 1 or w < 1:
        raise ValueError(f"{name} must hold at least one non-empty image, got shape {images.shape}")
    if not np.all(np.isfinite(images)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return images


def _check_display_range(images, arr: np.ndarray, name: str) -> None:
    """Images to show lie in [-1, 1]. 0..255 pixels (a uint8 tensor, or floats none below 0 and some above 2) would
    be clipped to a white square: say so. Raw diffusion samples may overshoot [-1, 1], but never all upwards."""
    dtype = getattr(images, "dtype", None)
    integer = dtype == torch.uint8 or (isinstance(images, np.ndarray) and images.dtype == np.uint8)
    if integer or (arr.min() >= 0 and arr.max() > 2):
        raise ValueError(
            f"{name} must be in [-1, 1] to show, got values from {arr.min():g} to {arr.max():g}"
            f"{' (uint8)' if integer else ''}: 0..255 pixels? use x / 127.5 − 1"
        )


def make_grid(images, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile N images into one array, ``nrow`` images per row (row-major, like torchvision).

    Args:
        images: N×C×H×W tensor or array, C = 1 or 3. Values are copied unchanged.
        nrow: images per row; None → ceil(sqrt(N)).
        padding: pixels of ``pad_value`` between images and around the border.
        pad_value: fill for padding and empty cells (1.0 = white for [-1, 1] images).
    Returns:
        float32 array of shape (R·(H+p)+p, nrow·(W+p)+p) for C = 1, or that ×3 for C = 3,
        with R = ceil(N / nrow) rows. Image k sits at row k // nrow, column k % nrow, its top-left
        pixel at (p + (k // nrow)(H+p), p + (k % nrow)(W+p)).
    """
    arr = _to_numpy_images(images)
    return _grid(arr, nrow, padding, padding, pad_value)


def _grid(arr: np.ndarray, nrow, pad_y, pad_x, pad_value) -> np.ndarray:
    """make_grid on a checked array, with separate vertical (pad_y) and horizontal (pad_x) padding."""
    n, c, h, w = arr.shape
    if nrow is None:
        nrow = math.ceil(math.sqrt(n))
    if not isinstance(nrow, (int, np.integer)) or isinstance(nrow, bool) or nrow < 1:
        raise ValueError(f"nrow must be a positive int (images per row), got {nrow!r}")
    for p in (pad_y, pad_x):
        if not isinstance(p, (int, np.integer)) or isinstance(p, bool) or p < 0:
            raise ValueError(f"padding must be a non-negative int (pixels), got {p!r}")
    ncol = min(int(nrow), n)
    nrows = math.ceil(n / ncol)
    py, px = int(pad_y), int(pad_x)
    grid = np.full((nrows * (h + py) + py, ncol * (w + px) + px, c), pad_value, dtype=np.float32)
    for k in range(n):
        r, col = divmod(k, ncol)
        y, x = py + r * (h + py), px + col * (w + px)
        grid[y : y + h, x : x + w, :] = arr[k].transpose(1, 2, 0)
    return grid[:, :, 0] if c == 1 else grid


def to_unit(x: np.ndarray) -> np.ndarray:
    """Map [-1, 1] to [0, 1] for display: (x + 1) / 2, clipped."""
    return np.clip((np.asarray(x, dtype=np.float32) + 1.0) / 2.0, 0.0, 1.0)


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def show_images(
    images, nrow: int | None = None, title: str | None = None, ax=None, labels=None, padding: int = 2,
    row_labels=None,
):
    """Show a grid of N×C×H×W images in [-1, 1] (C = 1 greyscale, 3 RGB); returns the Figure.

    Args:
        images: tensor or array; values outside [-1, 1] are clipped for display.
        nrow: images per row (None: about square).
        title: figure title.
        ax: draw into this Axes instead of a new figure.
        labels: one caption per image (strings or numbers), drawn above each tile.
        row_labels: one caption per row of the grid (a prompt, a setting), drawn at its left.
    """
    arr = _to_numpy_images(images)
    _check_display_range(images, arr, "images")
    n, _, h, w = arr.shape
    if labels is not None:
        if isinstance(labels, torch.Tensor):
            labels = labels.tolist()
        labels = list(labels)
        if len(labels) != n:
            raise ValueError(f"labels must have one entry per image ({n}), got {len(labels)}")
    # with labels, leave a band above each row for the text
    pad_y = padding if labels is None else padding + max(6, h // 3)
    grid = _grid(arr, nrow, pad_y, padding, 1.0)
    ncol = min(nrow or math.ceil(math.sqrt(n)), n)
    rows = math.ceil(n / ncol)
    if row_labels is not None:
        row_labels = [str(r) for r in row_labels]
        if len(row_labels) != rows:
            raise ValueError(f"row_labels must have one entry per row of the grid ({rows}), got {len(row_labels)}")
    if ax is None:
        # about one inch per 32 pixels, at most 16 inches wide or tall
        width, height = grid.shape[1] / 32, grid.shape[0] / 32
        shrink = min(1.0, 16 / width, 16 / height)
        top = 0.35 if title else 0.0
        # room at the left for the row captions: about 0.07 inch per character at font size 8
        left = 0.1 + 0.07 * max(map(len, row_labels)) if row_labels else 0.0
        fig_w, fig_h = max(width * shrink, 1.0) + left, max(height * shrink, 1.0) + top
        fig = _pyplot().figure(figsize=(fig_w, fig_h))
        ax = fig.add_axes((left / fig_w, 0, 1 - left / fig_w, 1 - top / fig_h))
    else:
        fig = ax.figure
    ax.imshow(
        to_unit(grid), cmap="gray" if grid.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest"
    )
    ax.set_axis_off()
    if labels is not None:
        for k, lab in enumerate(labels):
            r, col = divmod(k, ncol)
            x = padding + col * (w + padding) + w / 2
            y = pad_y + r * (h + pad_y)
            ax.text(x, y - 1, str(lab), ha="center", va="bottom", fontsize=7, clip_on=False)
    for r, lab in enumerate(row_labels or []):
        ax.text(-padding, pad_y + r * (h + pad_y) + h / 2, lab, ha="right", va="center", fontsize=8, clip_on=False)
    if title:
        ax.set_title(title)
    return fig


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------


def _as_schedule_dict(schedules) -> dict:
    """dict name → schedule from a dict, a list/tuple, or a single schedule."""
    if hasattr(schedules, "alphas_cumprod"):
        schedules = [schedules]
    if isinstance(schedules, Mapping):
        items = list(schedules.items())
    elif isinstance(schedules, Sequence) and not isinstance(schedules, str):
        items = []
        for i, s in enumerate(schedules):
            name = getattr(s, "name", None) or f"schedule {i}"
            if any(name == k for k, _ in items):
                name = f"{name} ({i})"
            items.append((name, s))
    else:
        raise ValueError(
            f"schedules must be a dict name → NoiseSchedule or a list of them, got {type(schedules).__name__}"
        )
    if not items:
        raise ValueError("schedules is empty: expected at least one NoiseSchedule")
    for name, s in items:
        abar = getattr(s, "alphas_cumprod", None)
        if abar is None:
            raise ValueError(
                f"schedule {name!r} must be a NoiseSchedule (with .alphas_cumprod), got {type(s).__name__}"
            )
        if torch.as_tensor(abar).dim() != 1 or len(abar) < 1:
            raise ValueError(
                f"schedule {name!r}: alphas_cumprod must have shape (T,), got {tuple(abar.shape)}"
            )
    return {str(k): v for k, v in items}


def _abar_snr(schedule) -> tuple[np.ndarray, np.ndarray]:
    abar = torch.as_tensor(schedule.alphas_cumprod).detach().to("cpu", torch.float64).numpy()
    snr = abar / np.maximum(1.0 - abar, 1e-300)
    return abar, snr


def _db(snr: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(snr, 1e-30))


def plot_schedules(schedules, figsize=(11, 4)):
    """abar_t (signal kept) and SNR(t) = abar_t / (1 − abar_t) in dB against t, side by side.

    The 0 dB line (abar = ½, as much noise as signal) is drawn, and each schedule's crossing
    step is marked. ``schedules``: dict name → NoiseSchedule, a list (named by ``.name``) or one.
    Returns the Figure.
    """
    named = _as_schedule_dict(schedules)
    plt = _pyplot()
    fig, (ax_a, ax_s) = plt.subplots(1, 2, figsize=figsize)
    for name, s in named.items():
        abar, snr = _abar_snr(s)
        t = np.arange(len(abar))
        (line,) = ax_a.plot(t, abar, label=name)
        db = _db(snr)
        ax_s.plot(t, db, color=line.get_color(), label=name)
        below = np.nonzero(abar <= 0.5)[0]
        if len(below):
            t0 = int(below[0])
            ax_s.plot([t0], [db[t0]], "o", color=line.get_color(), ms=5)
            ax_s.annotate(
                f"t={t0}",
                (t0, db[t0]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
                color=line.get_color(),
            )
    ax_a.set_xlabel("t")
    ax_a.set_ylabel(r"$\bar\alpha_t$ (signal variance kept)")
    ax_a.set_ylim(-0.02, 1.02)
    ax_a.set_title(r"$\bar\alpha_t$")
    ax_a.legend()
    ax_s.axhline(0.0, color="grey", lw=1, ls="--", label="0 dB")
    ax_s.set_xlabel("t")
    ax_s.set_ylabel("SNR (dB)")
    ax_s.set_title(r"SNR$(t) = \bar\alpha_t / (1-\bar\alpha_t)$")
    ax_s.legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Loss curves
# ---------------------------------------------------------------------------------------------


def _ema(values: np.ndarray, smooth: float) -> np.ndarray:
    """Debiased exponential moving average (as TensorBoard): m_k = s m_{k-1} + (1-s) v_k, / (1 - s^k).

    NaNs are skipped (the average carries over them).
    """
    out = np.empty_like(values)
    m, weight = 0.0, 0.0
    for k, v in enumerate(values):
        if np.isfinite(v):
            m = smooth * m + (1.0 - smooth) * v
            weight = smooth * weight + (1.0 - smooth)
        out[k] = m / weight if weight > 0 else np.nan
    return out


def plot_loss(
    history, smooth: float = 0.9, ax=None, logy: bool | None = None, title: str | None = "loss", ylabel: str = "loss"
):
    """Plot loss curves: the raw values faintly, an exponential moving average on top.

    Args:
        history: a sequence of numbers (one per step), or a dict name → sequence
            (e.g. ``{"train": [...], "val": [...]}``).
        smooth: EMA factor s in [0, 1): 0 = no smoothing, 0.98 = strong.
        ax: draw into this Axes.
        logy: log-scale the y axis; None = when every value is positive and they span > 10×.
        ylabel: the y axis's label (for curves that are not a loss, such as a KL term).
    Returns the Figure.
    """
    if not isinstance(smooth, (int, float)) or not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be a number in [0, 1), got {smooth!r}")
    series = dict(history) if isinstance(history, Mapping) else {"loss": history}
    if not series:
        raise ValueError("history is empty: expected a sequence of losses or a dict of them")
    curves = {}
    for name, values in series.items():
        if isinstance(values, torch.Tensor):  # float64 first: numpy has no bf16
            values = values.detach().to("cpu", torch.float64).numpy()
        elif isinstance(values, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in values):
            # e.g. losses.append(loss.detach()) on a GPU: numpy cannot read CUDA tensors one by one
            values = [v.detach().to("cpu", torch.float64).item() if isinstance(v, torch.Tensor) and v.numel() == 1
                      else v for v in values]
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"history[{name!r}] must be a sequence of numbers") from e
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(
                f"history[{name!r}] must be a non-empty 1-D sequence of numbers, got shape {arr.shape}"
            )
        curves[str(name)] = arr
    if ax is None:
        fig, ax = _pyplot().subplots(figsize=(6, 3.5))
    else:
        fig = ax.figure
    for name, arr in curves.items():
        steps = np.arange(len(arr))
        if smooth > 0:
            (raw,) = ax.plot(steps, arr, alpha=0.25, lw=0.8)
            ax.plot(steps, _ema(arr, smooth), color=raw.get_color(), lw=1.6, label=f"{name}, smoothed ({smooth:g})")
        else:
            ax.plot(steps, arr, lw=1.2, label=name)
    finite = np.concatenate([a[np.isfinite(a)] for a in curves.values()])
    if logy is None:
        logy = bool(finite.size and finite.min() > 0 and finite.max() > 10 * finite.min())
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------------------------------------
# Animations
# ---------------------------------------------------------------------------------------------


def _check_frames(frames, max_frames: int | None = None) -> tuple[list[np.ndarray], list[int]]:
    if isinstance(frames, torch.Tensor) and frames.dim() == 5:
        frames = list(frames.unbind(0))
    if (
        isinstance(frames, (torch.Tensor, np.ndarray))
        or not isinstance(frames, Sequence)
        or isinstance(frames, str)
    ):
        raise ValueError(
            "frames must be a list of N×C×H×W tensors (one per denoising step) or an S×N×C×H×W tensor, "
            f"got {type(frames).__name__}"
        )
    if len(frames) == 0:
        raise ValueError("frames is empty: expected at least one N×C×H×W tensor")
    arrays = [_to_numpy_images(f, f"frames[{i}]") for i, f in enumerate(frames)]
    shape = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.shape != shape:
            raise ValueError(
                f"every frame must have the same shape; frames[0] is {shape}, frames[{i}] is {a.shape}"
            )
    keep = list(range(len(arrays)))
    if max_frames is not None:
        if not isinstance(max_frames, int) or max_frames < 2:
            raise ValueError(f"max_frames must be an int ≥ 2, got {max_frames!r}")
        if len(arrays) > max_frames:  # evenly spaced, always keeping the first and last frame
            keep = sorted(set(np.linspace(0, len(arrays) - 1, max_frames).round().astype(int).tolist()))
    return [arrays[i] for i in keep], keep


def animate_trajectory(
    frames,
    interval: int = 100,
    nrow: int | None = None,
    titles=None,
    max_frames: int | None = 100,
    repeat_delay: int = 1000,
):
    """Animate a denoising trajectory: frame k shows the grid of ``frames[k]`` (N×C×H×W in [-1, 1]).

    Args:
        frames: list of S tensors N×C×H×W (x_T … x_0), or one S×N×C×H×W tensor.
        interval: milliseconds per frame.
        nrow: images per row in each grid.
        titles: one title per frame (e.g. ``[f"t = {t}" for t in timesteps]``); default "step k/S".
        max_frames: keep at most this many frames, evenly spaced (first and last kept); None: all.
    Returns:
        A ``matplotlib.animation.FuncAnimation``. In a notebook show it with
        :func:`trajectory_html` (JavaScript player, no ffmpeg needed).
    """
    from matplotlib import animation

    if titles is not None:
        titles = list(titles)
        if len(titles) != len(frames):
            raise ValueError(f"titles must have one entry per frame ({len(frames)}), got {len(titles)}")
    arrays, keep = _check_frames(frames, max_frames)
    if not isinstance(interval, (int, float)) or interval <= 0:
        raise ValueError(f"interval must be a positive number of milliseconds, got {interval!r}")
    total = len(frames)
    labels = [titles[i] if titles is not None else f"step {i + 1}/{total}" for i in keep]
    grids = [to_unit(make_grid(a, nrow=nrow)) for a in arrays]
    plt = _pyplot()
    h, w = grids[0].shape[:2]
    fig, ax = plt.subplots(figsize=(min(max(w / 40, 2.5), 10), min(max(h / 40, 2.5), 10) + 0.3))
    ax.set_axis_off()
    im = ax.imshow(
        grids[0], cmap="gray" if grids[0].ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest"
    )
    title = ax.set_title(labels[0])

    def update(k):
        im.set_data(grids[k])
        title.set_text(labels[k])
        return im, title

    anim = animation.FuncAnimation(
        fig, update, frames=len(grids), interval=interval, blit=False, repeat_delay=repeat_delay
    )
    return anim


def trajectory_html(frames, **kwargs):
    """The trajectory as an ``IPython.display.HTML`` JavaScript player (``anim.to_jshtml()``).

    Takes the arguments of :func:`animate_trajectory`. Closes the figure afterwards, so the
    notebook shows only the player, not an extra still image.
    """
    from IPython.display import HTML

    anim = animate_trajectory(frames, **kwargs)
    try:
        html = anim.to_jshtml()
    finally:
        _pyplot().close(anim._fig)
    return HTML(html)


# ---------------------------------------------------------------------------------------------
# Widgets
# ---------------------------------------------------------------------------------------------


def _panels_png(panels, figsize, nrow: int | None = None) -> bytes:
    """Image grids side by side as PNG bytes, one titled panel per (images, title) in ``panels``
    (a pyplot-free Figure: nothing is displayed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=80)
    FigureCanvasAgg(fig)
    for ax, (arr, title) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels):
        grid = to_unit(make_grid(arr, nrow=nrow))
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def noising_slider(x0, schedules, seed: int = 0, t: int | None = None):
    r"""A widget to explore the forward process: pick a schedule and t, see abar_t, SNR and x_t.

        x_t = sqrt(abar_t) x_0 + sqrt(1 − abar_t) ε,   SNR(t) = abar_t / (1 − abar_t)

    ε is drawn once (``seed``), so moving the slider changes only t, not the noise.

    Args:
        x0: one image C×H×W or a batch N×C×H×W in [-1, 1] (up to 16 are shown).
        schedules: dict name → NoiseSchedule, a list of them, or one.
        seed: seed of the fixed noise ε.
        t: the step shown first (default: T // 2).
    Returns:
        An ``ipywidgets.VBox`` (a dropdown, an IntSlider, a text line and the image). It is built
        without a display, so it also works in scripts and tests. Extra attributes:
        ``.schedule_dropdown``, ``.t_slider``, ``.info`` (HTML), ``.image`` (PNG), ``.refresh()`` and
        ``.state``,
        a dict with the current ``schedule``, ``t``, ``abar``, ``snr``, ``snr_db`` and ``x_t``.
    """
    import ipywidgets as widgets

    if isinstance(x0, np.ndarray):
        x0 = torch.from_numpy(x0)
    if not isinstance(x0, torch.Tensor):
        raise ValueError(f"x0 must be a tensor C×H×W or N×C×H×W, got {type(x0).__name__}")
    if x0.dim() == 3:
        x0 = x0.unsqueeze(0)
    _check_display_range(x0, _to_numpy_images(x0, "x0"), "x0")  # shape, channels, finiteness and range
    x0 = x0.detach().to("cpu", torch.float64)[:16]
    named = _as_schedule_dict(schedules)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    first = next(iter(named.values()))
    t_max = len(first.alphas_cumprod) - 1
    t0 = t_max // 2 if t is None else t
    if not isinstance(t0, int) or not 0 <= t0 <= t_max:
        raise ValueError(f"t must be an int in 0..{t_max}, got {t!r}")
    dropdown = widgets.Dropdown(options=list(named), value=next(iter(named)), description="schedule")
    slider = widgets.IntSlider(
        value=t0,
        min=0,
        max=t_max,
        step=1,
        description="t",
        continuous_update=True,
        layout=widgets.Layout(width="420px"),
    )
    info = widgets.HTML()
    image = widgets.Image(format="png")
    box = widgets.VBox([widgets.HBox([dropdown, slider]), info, image])
    state: dict = {}
    busy = [False]

    def update(_change=None):
        if busy[0]:  # changing the slider's range below fires the observer again; draw once
            return
        busy[0] = True
        try:
            _draw()
        finally:
            busy[0] = False

    def _draw():
        schedule = named[dropdown.value]
        abar_all, snr_all = _abar_snr(schedule)
        if slider.max != len(abar_all) - 1:  # schedules may differ in T
            slider.value = min(slider.value, len(abar_all) - 1)
            slider.max = len(abar_all) - 1
        k = int(slider.value)
        abar = float(abar_all[k])
        snr = float(snr_all[k])
        x_t = math.sqrt(abar) * x0 + math.sqrt(1.0 - abar) * noise
        snr_db = float(_db(np.array([snr]))[0])
        state.update(schedule=dropdown.value, t=k, abar=abar, snr=snr, snr_db=snr_db, x_t=x_t.float())
        info.value = (
            f"<b>{dropdown.value}</b>, t = {k}: &nbsp; ᾱ<sub>t</sub> = {abar:.4f} &nbsp; "
            f"SNR = {snr:.4g} ({snr_db:+.1f} dB) &nbsp; "
            f"x<sub>t</sub> = {math.sqrt(abar):.3f}·x<sub>0</sub> + {math.sqrt(1 - abar):.3f}·ε"
        )
        # "x_t at t = k", not "x_k": at t = 0 that would read x_0, the clean image's name, under a noised image
        titles = ("$x_0$ (clean)", f"$x_t$ at $t = {k}$")
        state["titles"] = titles
        image.value = _panels_png([(x0.float().numpy(), titles[0]), (x_t.float().numpy(), titles[1])], (6, 3.2))

    dropdown.observe(update, names="value")
    slider.observe(update, names="value")
    update()
    box.schedule_dropdown = dropdown
    box.t_slider = slider
    box.info = info
    box.image = image
    box.state = state
    box.refresh = update
    return box


def guidance_slider(generate, s: float = 3.0, s_max: float = 10.0, step: float = 0.5, images=None,
                    nrow: int | None = None):
    r"""A widget for the guidance scale of classifier-free guidance (lesson 07):

        ε̃ = ε_∅ + s · (ε_c − ε_∅)

    Moving the slider calls ``generate(s)`` and shows the images it returns as one grid. Seed the
    sampling inside ``generate``, so that the slider changes s and nothing else.

    Args:
        generate: a callable s → images N×C×H×W in [-1, 1] (for example a ``sample(...)`` call with
            ``guidance_scale=s`` and a fixed seed).
        s: the scale shown first; ``images``, if given, are what ``generate(s)`` would return (say a
            sweep's row, to save one sampling run), else ``generate(s)`` is called once here.
        s_max, step: the slider runs over 0, step, …, s_max.
        nrow: images per row of the grid (default: about square).
    Returns:
        An ``ipywidgets.VBox`` (the slider, the grid as a PNG image, a caption), built without a
        display so that it works in scripts and tests. Extra attributes: ``.slider``, ``.image``,
        ``.caption`` and ``.state``, a dict with the current ``s``, its ``images`` and the
        ``seconds`` ``generate`` took (None for images given).
    """
    import ipywidgets as widgets

    if not callable(generate):
        raise ValueError(f"generate must be a callable s → images, got {type(generate).__name__}")
    for name, value in (("s_max", s_max), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= s_max:
        raise ValueError(f"s must be a number in [0, s_max = {s_max:g}], got {s!r}")
    slider = widgets.FloatSlider(value=float(s), min=0.0, max=float(s_max), step=float(step), description="s",
                                 continuous_update=False)  # sampling takes seconds: redraw on release only
    image = widgets.Image(format="png")
    caption = widgets.HTML()
    box = widgets.VBox([slider, image, caption])
    state: dict = {}

    def show(s_now: float, shown, seconds):
        _to_numpy_images(shown, "generate(s)")  # validates shape, channels and finiteness
        state.update(s=s_now, images=shown, seconds=seconds)
        n, height, width = shown.shape[0], shown.shape[-2], shown.shape[-1]
        cols = nrow or math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        # 2 screen pixels per image pixel at 80 dpi
        size = (min(2 + cols * (width + 2) / 40, 12), 0.6 + rows * (height + 2) / 40)
        image.value = _panels_png([(shown, f"s = {s_now:g}")], size, nrow)
        took = "" if seconds is None else f" ({seconds:.1f} s to sample)"
        caption.value = f"guidance scale s = {s_now:g}{took}"

    def redraw(change):
        s_now = float(change["new"])
        start = time.perf_counter()
        shown = generate(s_now)
        show(s_now, shown, time.perf_counter() - start)

    if images is None:
        start = time.perf_counter()
        images = generate(float(s))
        show(float(s), images, time.perf_counter() - start)
    else:
        show(float(s), images, None)
    slider.observe(redraw, names="value")
    box.slider, box.image, box.caption, box.state = slider, image, caption, state
    return box
