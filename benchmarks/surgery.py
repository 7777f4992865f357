"""Cost of model surgery, as ratios against anchors measured in the same run (CPU, one thread).

- fold_batchnorm: eval-mode forward time of the folded model / the unfolded model.
- recalibrate_batchnorm: wall time / one plain eval-mode pass over the same data ("passes"), for the
  layer-by-layer "population" estimator (one pass per BatchNorm, each ending at the layer it measures)
  and for "one_pass".

Run: .venv/bin/python benchmarks/surgery.py
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
import torch.nn as nn

from normlab.nn.surgery import fold_batchnorm, recalibrate_batchnorm


class ConvBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x):  # (B, C, H, W)
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(h)))


def small_resnet(channels: int = 32, blocks: int = 4) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
        *[ConvBlock(channels) for _ in range(blocks)],
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10),
    )


def median_time(fn, repeats: int = 7) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = small_resnet().train()
    data = [torch.randn(32, 3, 32, 32) for _ in range(8)]
    for x in data:
        model(x)
    model.eval()

    folded = copy.deepcopy(model)
    report = fold_batchnorm(folded)
    x = data[0]
    unfolded_s = median_time(lambda: model(x))
    folded_s = median_time(lambda: folded(x))
    max_err = (folded(x) - model(x)).abs().max().item()

    def plain_pass():
        for batch in data:
            model(batch)

    anchor_s = median_time(plain_pass, repeats=3)
    population_s = median_time(lambda: recalibrate_batchnorm(model, data), repeats=3)
    one_pass_s = median_time(lambda: recalibrate_batchnorm(model, data, estimator="one_pass"), repeats=3)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, model: small_resnet "
          f"({n_bn} BatchNorm2d), input (32, 3, 32, 32), {len(data)} batches")
    print(f"fold: {len(report.folded)} of {n_bn} folded, max |folded - unfolded| = {max_err:.2e}")
    print()
    print("| measurement | anchor | ratio |")
    print("|---|---|---|")
    print(f"| folded eval forward / unfolded | unfolded {unfolded_s * 1e3:.2f} ms | {folded_s / unfolded_s:.2f} |")
    print(f"| recalibrate population / plain pass | plain pass {anchor_s * 1e3:.1f} ms | "
          f"{population_s / anchor_s:.2f} |")
    print(f"| recalibrate one_pass / plain pass | plain pass {anchor_s * 1e3:.1f} ms | {one_pass_s / anchor_s:.2f} |")


if __name__ == "__main__":
    main()
