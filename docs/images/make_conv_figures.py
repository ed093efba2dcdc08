"""Draw the pictures in docs/conv.md (conv-matrix.png, conv-stride2-dx.png) and docs/pooling.md (conv-maxpool.png).

Run from anywhere with the project's venv: ``.venv/bin/python docs/images/make_conv_figures.py``.
Every matrix entry and number drawn is computed with torch.nn.functional (the oracle that
scratch's Conv2d, ConvTranspose2d and MaxPool2d are tested against) and asserted, not typed in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

HERE = Path(__file__).resolve().parent

TAP_COLORS = ["#8ecae6", "#ffb703", "#b5e48c"]  # w0, w1, w2 (and rows of a 3x3 kernel)
PAD = "#d9d9d9"
ZERO = "#f4f4f4"
SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def _save(fig, name):
    """Render, crop, and store as a 64-colour palette PNG: flat cells and text, a few tens of KB."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3]
    rows, cols = np.nonzero((pixels < 250).any(axis=2))  # crop the white margins, keep 10 px
    pixels = pixels[max(rows.min() - 10, 0): rows.max() + 11, max(cols.min() - 10, 0): cols.max() + 11]
    image = Image.fromarray(np.ascontiguousarray(pixels))
    image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(HERE / name, optimize=True)
    print(HERE / name, (HERE / name).stat().st_size, "bytes")


def _grid(ax, rows, cols, title=None):
    ax.set_xlim(-0.55, cols - 0.45)  # a little margin: the outer grid lines are not clipped
    ax.set_ylim(rows - 0.45, -0.55)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)


def _cell(ax, r, c, color, text="", fontsize=8, weight="normal", edge="#666666"):
    ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor=color, edgecolor=edge, linewidth=0.6))
    if text:
        ax.text(c, r, text, ha="center", va="center", fontsize=fontsize, weight=weight)


def _outline(ax, r0, c0, rows, cols, color, inset=0.0, width=2.2):
    ax.add_patch(Rectangle((c0 - 0.5 + inset, r0 - 0.5 + inset), cols - 2 * inset, rows - 2 * inset,
                           facecolor="none", edgecolor=color, linewidth=width))


# ----------------------------------------------------------------- (a) conv as a sparse matrix
def conv_matrix():
    """1-D (as 1xW images): H = 8, k = 3, s = 2, P = 0 -> 3 outputs; and the transposed conv back."""
    size, stride = 8, (1, 2)
    taps = torch.tensor([[[[1.0, 2.0, 3.0]]]], dtype=torch.float64)  # entry t+1 marks tap w_t
    eye = torch.eye(size, dtype=torch.float64).reshape(size, 1, 1, size)
    A = tf.conv2d(eye, taps, stride=stride).reshape(size, -1).T.numpy()  # column h = A e_h
    out = A.shape[0]
    eye_out = torch.eye(out, dtype=torch.float64).reshape(out, 1, 1, out)
    AT = tf.conv_transpose2d(eye_out, taps, stride=stride, output_padding=(0, 1)).reshape(out, -1).T.numpy()
    assert A.shape == (3, 8) and np.array_equal(AT, A.T) and not A[:, 7].any()

    fig = Figure(figsize=(7.6, 4.0), dpi=110)
    left = fig.add_axes([0.05, 0.42, 0.55, 0.40])
    right = fig.add_axes([0.70, 0.20, 0.20, 0.64])
    for ax, M, title in ((left, A, "Conv: $y = Ax$,  $A$ is 3×8\n(k = 3, s = 2, P = 0, H = 8)"),
                         (right, AT, "ConvTranspose: $A^\\top$, 8×3\n(output_padding = 1)")):
        rows, cols = M.shape
        _grid(ax, rows, cols, title)
        for r in range(rows):
            for c in range(cols):
                t = int(M[r, c])
                _cell(ax, r, c, TAP_COLORS[t - 1] if t else "white", f"w{t - 1}".translate(SUB) if t else "")
    for c in range(8):
        left.text(c, 2.65, f"x{c}".translate(SUB), ha="center", va="top", fontsize=8)
    for r in range(3):
        left.text(-0.65, r, f"y{r}".translate(SUB), ha="right", va="center", fontsize=8)
        right.text(r, 7.65, f"x'{r}".translate(SUB), ha="center", va="top", fontsize=8)
    for r in range(8):
        right.text(2.65, r, f"y'{r}".translate(SUB), ha="left", va="center", fontsize=8)
    _outline(left, 0, 7, 3, 1, "#d62828")
    left.text(7.6, 3.1, "no row reads $x_7$: the floor\ndrops it, so $dx_7 = 0$", ha="right", va="top",
              fontsize=8, color="#d62828")
    _outline(right, 7, 0, 1, 3, "#d62828")
    right.text(1, 8.3, "$y'_7$ gets no term: bias only", ha="center", va="top", fontsize=8, color="#d62828")
    fig.text(0.05, 0.06, "row $i$ of $A$ = output $y_i$: the taps $w_0, w_1, w_2$ at columns $2i, 2i+1, 2i+2$.\n"
             "column $h$ of $A$ = every output that reads $x_h$ = row $h$ of $A^\\top$.",
             ha="left", va="bottom", fontsize=8)
    _save(fig, "conv-matrix.png")


# ------------------------------------------------------- (b) stride 2, padding 1: forward and dx
def stride2_dx():
    size, k, s, P = 5, 3, 2, 1
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, size, size, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(1, 1, k, k, dtype=torch.float64, generator=gen)
    dy = torch.randn(1, 1, 3, 3, dtype=torch.float64, generator=gen)
    y = tf.conv2d(x, w, stride=s, padding=P)
    y.backward(dy)
    x, y, dx, W, G = x.detach().numpy(), y.detach().numpy(), x.grad.numpy(), w[0, 0].numpy(), dy[0, 0].numpy()
    # the four terms the picture claims for dx[1, 1]
    assert y.shape[2:] == (3, 3)
    assert np.isclose(dx[0, 0, 1, 1], G[0, 0] * W[2, 2] + G[0, 1] * W[2, 0] + G[1, 0] * W[0, 2] + G[1, 1] * W[0, 0])
    assert np.isclose(y[0, 0, 0, 0], (x[0, 0, :2, :2] * W[1:, 1:]).sum())

    fig = Figure(figsize=(8.4, 6.4), dpi=110)
    axes = {
        "x": fig.add_axes([0.02, 0.55, 0.30, 0.38]),
        "w": fig.add_axes([0.40, 0.63, 0.17, 0.22]),
        "y": fig.add_axes([0.68, 0.63, 0.17, 0.22]),
        "dy": fig.add_axes([0.02, 0.10, 0.30, 0.38]),
        "wf": fig.add_axes([0.40, 0.18, 0.17, 0.22]),
        "dx": fig.add_axes([0.66, 0.14, 0.26, 0.30]),
    }
    for height in (0.74, 0.29):
        fig.text(0.355, height, "$\\star$", ha="center", va="center", fontsize=18)
        fig.text(0.62, height, "=", ha="center", va="center", fontsize=18)
    orange, purple = "#e85d04", "#7b2cbf"

    ax = axes["x"]
    _grid(ax, 7, 7, "forward: $x$ (5×5), zero-padded by $P = 1$")
    for r in range(7):
        for c in range(7):
            inside = 1 <= r <= 5 and 1 <= c <= 5
            _cell(ax, r, c, "white" if inside else PAD, f"{r - 1},{c - 1}" if inside else "0", fontsize=7)
    _outline(ax, 0, 0, 3, 3, orange, inset=0.06)          # y[0,0]: rows/cols -1..1
    _outline(ax, 4, 2, 3, 3, purple, inset=0.06)          # y[2,1]: rows 3..5, cols 1..3
    ax = axes["y"]
    _grid(ax, 3, 3, "$y$ (3×3)")
    for r in range(3):
        for c in range(3):
            _cell(ax, r, c, {(0, 0): "#fcd5b5", (2, 1): "#dcc6f0"}.get((r, c), "white"), f"{r},{c}", fontsize=7)
    ax.text(1, 2.75, "$y_{ij}$ reads rows $2i-1..2i+1$,\ncols $2j-1..2j+1$ of $x$", ha="center", va="top", fontsize=8)
    ax = axes["w"]
    _grid(ax, 3, 3, "kernel $w$, stride 2")
    for r in range(3):
        for c in range(3):
            _cell(ax, r, c, TAP_COLORS[r], f"w{r}{c}".translate(SUB))

    ax = axes["dy"]
    _grid(ax, 7, 7, "backward: $dy$ (3×3) dilated by $s = 2$,\nzero-padded by $d(k-1) - P = 1$")
    for r in range(7):
        for c in range(7):
            if r in (0, 6) or c in (0, 6):
                _cell(ax, r, c, PAD, "0", fontsize=7)
            elif (r - 1) % 2 == 0 and (c - 1) % 2 == 0:
                _cell(ax, r, c, "#ffe8a3", f"dy{(r - 1) // 2}{(c - 1) // 2}".translate(SUB), fontsize=8)
            else:
                _cell(ax, r, c, ZERO, "0", fontsize=7)
    _outline(ax, 1, 1, 3, 3, "#d62828", inset=0.06)
    ax = axes["wf"]
    _grid(ax, 3, 3, "$w$ flipped, stride 1")
    for r in range(3):
        for c in range(3):
            _cell(ax, r, c, TAP_COLORS[2 - r], f"w{2 - r}{2 - c}".translate(SUB))
    ax = axes["dx"]
    _grid(ax, 5, 5, "$dx$ (5×5)")
    for r in range(5):
        for c in range(5):
            _cell(ax, r, c, "#f7c6c6" if (r, c) == (1, 1) else "white", f"{r},{c}", fontsize=7)
    ax.text(2, 4.75, "$dx_{11} = dy_{00}w_{22} + dy_{01}w_{20}$\n$\\;+\\, dy_{10}w_{02} + dy_{11}w_{00}$",
            ha="center", va="top", fontsize=8, color="#d62828")
    _save(fig, "conv-stride2-dx.png")


# ---------------------------------------------------------- (c) max pool: routing with overlaps
def maxpool_routing():
    x = np.array([[1, 0, 2, 1, 3],
                  [2, 4, 8, 0, 1],
                  [0, 3, 5, 2, 6],
                  [7, 1, 2, 4, 0],
                  [3, 7, 1, 3, 2]], dtype=np.float64).reshape(1, 1, 5, 5)
    dy = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    tx = torch.tensor(x, requires_grad=True)
    ty, argmax = tf.max_pool2d(tx, 3, 2, return_indices=True)
    ty.backward(torch.tensor(dy))
    y, dx = ty.detach().numpy(), tx.grad.numpy()
    winners = [divmod(int(i), 5) for i in argmax.reshape(-1)]
    assert winners == [(1, 2), (1, 2), (3, 0), (2, 4)]
    assert dx[0, 0, 1, 2] == 3 and dx[0, 0, 3, 0] == 3 and dx[0, 0, 2, 4] == 4 and dx.sum() == 10

    colors = ["#0077b6", "#e85d04", "#2a9d8f", "#9d0208"]  # windows (0,0), (0,1), (1,0), (1,1)
    fig = Figure(figsize=(8.2, 3.0), dpi=110)
    ax_x = fig.add_axes([0.01, 0.15, 0.30, 0.74])
    ax_y = fig.add_axes([0.35, 0.33, 0.13, 0.37])
    ax_dy = fig.add_axes([0.52, 0.33, 0.13, 0.37])
    ax_dx = fig.add_axes([0.69, 0.15, 0.30, 0.74])

    _grid(ax_x, 5, 5, "$x$: four 3×3 windows, stride 2")
    _grid(ax_dx, 5, 5, "$dx$: each $dy$ goes to its arg-max")
    for r in range(5):
        for c in range(5):
            won = [w for w, rc in enumerate(winners) if rc == (r, c)]
            _cell(ax_x, r, c, "#fff3b0" if won else "white", f"{int(x[0, 0, r, c])}",
                  fontsize=9, weight="bold" if won else "normal")
            value = dx[0, 0, r, c]
            text = "1+2" if (r, c) == (1, 2) else (f"{value:g}" if value else "0")
            _cell(ax_dx, r, c, "#fff3b0" if value else "white", text, fontsize=9,
                  weight="bold" if value else "normal")
    for w, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        _outline(ax_x, 2 * i, 2 * j, 3, 3, colors[w], inset=0.05 + 0.07 * w, width=1.8)
    ax_x.text(1.27, 3.72, "tie", ha="center", va="center", fontsize=6.5, color=colors[2])
    ax_x.text(2, 4.75, "7 at (3,0) and (4,1) tie: the first in\nrow-major order wins (torch's rule)",
              ha="center", va="top", fontsize=7.5)
    for ax, values, title in ((ax_y, y, "$y$ = max"), (ax_dy, dy, "$dy$")):
        _grid(ax, 2, 2, title)
        for i in range(2):
            for j in range(2):
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="white",
                                       edgecolor=colors[2 * i + j], linewidth=2))
                ax.text(j, i, f"{values[0, 0, i, j]:g}", ha="center", va="center", fontsize=9)
    ax_dx.text(2, 4.75, "8 wins two overlapping windows:\nits gradients add", ha="center", va="top", fontsize=7.5)
    _save(fig, "conv-maxpool.png")


if __name__ == "__main__":
    conv_matrix()
    stride2_dx()
    maxpool_routing()
