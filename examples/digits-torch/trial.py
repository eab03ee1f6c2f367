"""One trial: train a small CNN on the 8x8 digits images and report test accuracy.

The accuracy on a held-out quarter of the data is reported after every epoch as an
intermediate result, and the last one as the final result.

Run by hand (``python3 trial.py``), the trial uses the defaults below and only logs its
results. ``DIGITS_EPOCHS`` (or ``--epochs``) sets the number of epochs, which tests lower.
"""

import argparse
import logging
import os

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import tunelab

DEFAULTS = {"lr": 0.01, "channels": 16, "hidden": 64, "dropout": 0.25, "batch_size": 64}


class DigitsNet(nn.Module):
    """Two 3x3 convolutions on 1x8x8 images, then a hidden layer and 10 outputs."""

    def __init__(self, channels: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * channels * 4 * 4, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 10),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


def load_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    digits = load_digits()
    images = digits.images / 16.0  # pixel values are 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.25, stratify=digits.target, random_state=0
    )
    return (
        torch.tensor(x_train, dtype=torch.float32).unsqueeze(1),
        torch.tensor(x_test, dtype=torch.float32).unsqueeze(1),
        torch.tensor(y_train, dtype=torch.long),
        torch.tensor(y_test, dtype=torch.long),
    )


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    return float((predicted == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("DIGITS_EPOCHS", "8")))
    args = parser.parse_args()

    params = dict(DEFAULTS)
    params.update(tunelab.get_next_parameter())

    # Two trials run side by side on a 2-core machine: one thread each keeps them from
    # fighting over the cores.
    torch.set_num_threads(1)
    torch.manual_seed(0)

    x_train, x_test, y_train, y_test = load_data()
    model = DigitsNet(int(params["channels"]), int(params["hidden"]), float(params["dropout"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=float(params["lr"]))
    loss_fn = nn.CrossEntropyLoss()
    batch_size = int(params["batch_size"])

    score = 0.0
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
        score = accuracy(model, x_test, y_test)
        tunelab.report_intermediate_result(score)

    tunelab.report_final_result(score)
    print(f"params={params} epochs={args.epochs} accuracy={score:.4f}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
