"""Train and export the quickstart's sample model (run by hand; outputs are committed package data).

A small CNN on scikit-learn's bundled 8x8 digits, built to show the TensorRT fixes:
- `F.interpolate(scale_factor=2, mode="bilinear", align_corners=True)` exports as a Resize
  with scales + align_corners, which TensorRT 7.x parsers refuse (docs/targets.md);
- `torch.gather` (a class-order permutation) exports as GatherElements, absent before
  TensorRT 7.2 (docs/targets.md).

    pip install torch==2.13.0 scikit-learn && python tools/make_sample_model.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn

OUT = Path(__file__).resolve().parents[1] / "src" / "onnx2trt_lib" / "data" / "sample"
SEED = 0
NUM_CALIB_IMAGES = 64


class DigitsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, 10)
        # the head predicts classes in a shuffled order; gather puts them back
        perm = torch.randperm(10, generator=torch.Generator().manual_seed(SEED))
        self.register_buffer("unshuffle", torch.argsort(perm).view(1, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        logits = self.fc(torch.flatten(x, 1))
        return torch.gather(logits, 1, self.unshuffle.expand(x.shape[0], 10))


def main() -> None:
    torch.manual_seed(SEED)
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # N x 1 x 8 x 8 in [0, 1]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(images))
    train, test = order[:1400], order[1400:]
    model = DigitsNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x_train, y_train = torch.from_numpy(images[train]), torch.from_numpy(labels[train])
    for _epoch in range(30):
        for start in range(0, len(train), 64):
            opt.zero_grad()
            loss = F.cross_entropy(model(x_train[start : start + 64]), y_train[start : start + 64])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(images[test])).argmax(1).numpy() == labels[test]).mean()
    print(f"test accuracy {acc:.4f} on {len(test)} images")

    OUT.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        torch.zeros(1, 1, 8, 8),
        OUT / "digits.onnx",
        input_names=["image"],
        output_names=["logits"],
        opset_version=13,
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    np.savez_compressed(OUT / "digits_test.npz", image=images[test], label=labels[test])
    calib_dir = OUT / "calib_images"
    calib_dir.mkdir(exist_ok=True)
    names = []
    for k, idx in enumerate(train[:NUM_CALIB_IMAGES]):
        name = f"digit_{k:03d}_{labels[idx]}.png"
        Image.fromarray(np.round(images[idx, 0] * 255).astype(np.uint8), mode="L").save(
            calib_dir / name
        )
        names.append(f"calib_images/{name}")
    (OUT / "calib_list.txt").write_text("\n".join(names) + "\n")
    (OUT / "preprocess.json").write_text(
        json.dumps(
            {
                "size": [8, 8],
                "color": "GRAY",
                "mean": [0.0],
                "std": [1.0],
                "scale": 1 / 255,
                "layout": "NCHW",
                "dtype": "float32",
            },
            indent=2,
        )
        + "\n"
    )
    (OUT / "README.md").write_text(
        "Made by tools/make_sample_model.py (sklearn digits, seed 0).\n"
        f"FP32 test accuracy at export: {acc:.4f} on {len(test)} held-out images.\n"
    )


if __name__ == "__main__":
    main()
