"""A small MLP trained on sklearn's 8x8 digits: the shared victim model of the attack and evaluation tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn


def train_digits_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Seeded (the caller's RNG untouched): 64-32-10 MLP, 150 full-batch Adam steps; returns (model, x, y)."""
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target, dtype=torch.long)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(150):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    return model, x, y
