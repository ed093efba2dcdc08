"""docs/images/iwae-bounds.png from two `autoencoders eval --json` results: the test set's
−ℒ_K (K = 1, 5, 50) and the importance-sampled −log p(x) of an iwae trained with K = 1 (the
one-sample ELBO: a VAE of the same net) and with K = 5.

    python docs/images/make_iwae_figure.py EVAL_K1.json EVAL_K5.json docs/images/iwae-bounds.png
"""

from __future__ import annotations

import json
import sys

from autoencoders import plots


def main(first: str, second: str, out: str) -> None:
    curves = {}
    for path, label in ((first, "trained with K = 1 (the VAE's ELBO)"), (second, "trained with K = 5 (IWAE)")):
        result = json.loads(open(path).read())["variational"]
        ks = sorted(int(k) for k in result["bounds"])
        curves[f"{label}: −L_K"] = (ks, [result["bounds"][str(k)] for k in ks])
        samples = result["nll_samples"]
        curves[f"{label}: −log p(x), K = {samples}"] = ([ks[0], ks[-1]], [result["nll"]] * 2)
    plots.save_curves(out, curves, xlabel="K, samples per image in the bound", ylabel="nats per test image",
                      title="iwae on MNIST (50 epochs, dynamic binarization): the bound tightens with K")


if __name__ == "__main__":
    main(*sys.argv[1:4])
