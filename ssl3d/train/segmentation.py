"""Supervised segmentation on the one loop: random patches (or whole volumes) from the cache, flips,
DiceCE, validation Dice per class on held-out cases, and a segmentation bundle at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..bundle import write_bundle
from ..errors import DatasetError
from ..pictures import DEFAULT_COLORS
from .loop import Task, TrainContext

__all__ = ["SegmentationTask", "parse_labels", "pad_to_multiple"]


def label_names(text: str | None) -> dict[int, str]:
    """``"1:liver,2:spleen"`` (or None) -> {1: "liver", 2: "spleen"}; DatasetError on a malformed item."""
    names: dict[int, str] = {}
    for item in filter(None, (text or "").split(",")):
        value, _, name = item.partition(":")
        if not value.strip().isdigit() or not name.strip():
            raise DatasetError(f"--labels item {item!r} must look like VALUE:NAME, e.g. 1:liver.")
        names[int(value)] = name.strip()
    return names


def parse_labels(text: str | None, values: list[int]) -> list[dict]:
    """``"1:liver,2:spleen"`` (or None) -> bundle label entries for ``values``, colours from a palette."""
    names = label_names(text)
    return [{"value": v, "name": names.get(v, f"label {v}"), "color": list(DEFAULT_COLORS[(v - 1) % len(DEFAULT_COLORS)])} for v in values]


def class_map(values: list[int], text: str | None, where: str) -> dict[int, int]:
    """Label value -> network class: the values themselves, or 1..K when they are sparse (a 0/255 mask).

    Sparse values (the largest over 15 and over twice their count: a net with that many outputs would be
    mostly empty classes) are refused unless ``--labels`` names every one of them; then the named values
    become classes 1..K in increasing order, e.g. ``--labels 255:tumour`` trains class 1 from value 255.

    Raises:
        DatasetError: a ``--labels`` value no label holds, or sparse values not all named by ``--labels``.
    """
    named = list(label_names(text))
    absent = sorted(set(named) - set(values))
    if absent:
        raise DatasetError(f"{where}: --labels names value(s) {', '.join(map(str, absent))} that no label map holds; "
                           f"the labels hold {', '.join(map(str, values))}.")
    if max(values) <= max(15, 2 * len(values)):
        return {v: v for v in values}
    if set(named) != set(values):
        example = ",".join(f"{v}:NAME" for v in values)
        raise DatasetError(f"{where}: the label maps hold the values {{0, {', '.join(map(str, values))}}}, e.g. a binary "
                           f"mask saved as 0/255; that would train a {max(values) + 1}-class network. Name each value to map "
                           f"it to classes 1..{len(values)}: --labels {example} (or save the masks with values 1..{len(values)}).")
    return {v: k for k, v in enumerate(values, start=1)}


def held_out_count(ctx: TrainContext, cases: int, fraction: float) -> int:
    """How many of ``cases`` validate (``fraction`` of them, rounded; none of one case); a fraction that
    rounds to no case is said once, as a warning, instead of a run that silently never validates."""
    n_val = int(round(cases * fraction)) if cases > 1 else 0
    if fraction > 0 and n_val == 0:
        ctx.logger.log(f"--val-fraction {fraction:g} of {cases} case(s) holds out none: this run does not validate "
                       f"(no validation Dice, the last checkpoint is exported); use more cases or a larger fraction", level="warning")
    return n_val


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad (N, C, D, H, W) at the far end of each axis to a multiple; returns the crop back."""
    sizes = x.shape[2:]
    pad = [(-s) % multiple for s in sizes]
    padded = F.pad(x, [p for size in reversed(pad) for p in (0, size)])
    return padded, tuple(slice(0, s) for s in sizes)


class SegmentationTask(Task):
    name = "segmentation"

    def __init__(
        self,
        data: str | Path,
        cache_dir: Path,
        strict: bool = False,
        val_fraction: float = 0.2,
        labels: str | None = None,
        label_names: dict | None = None,
        init: str | Path | None = None,
        train_cases: int | None = None,
        freeze_encoder: bool = False,
    ) -> None:
        self.data, self.cache_dir, self.strict = data, cache_dir, strict
        self.val_fraction, self.labels_text, self.label_names = val_fraction, labels, label_names or {}
        self.init, self.train_cases, self.freeze_encoder = init, train_cases, freeze_encoder
        self.load_report: dict | None = None

    def setup(self, ctx: TrainContext) -> None:
        from monai.losses import DiceCELoss

        from ..data.datasets import VolumeCache, find_cases
        from ..nets.builders import build_network, size_multiple

        from ..data.datasets import dataset_label_names

        self.label_names = {**dataset_label_names(self.data), **self.label_names}
        cache = VolumeCache(find_cases(self.data, labels=True), ctx.preset.preprocess, self.cache_dir, self.strict, ctx.logger)
        ctx.build_cache(cache)
        self.cache_info = cache.info()
        # memory maps (MappedVolume): each sample reads its patch only, validation one whole case at a time
        images, labels = cache.mapped(ctx.device), cache.mapped_labels(ctx.device)
        self.train_set, self.val = self._split(ctx, images, labels)
        scans = [lab.scan() for _, lab in self.train_set]  # one read of each training label map
        self.values = sorted(set().union(*(values for values, _ in scans)) - {0})
        if not self.values:
            raise DatasetError(f"{self.data}: the training labels hold no foreground value.")
        self._map_classes(class_map(self.values, self.labels_text, str(self.data)))
        # where the foreground lies: relabelling keeps it (class_map gives every training value a class >= 1)
        self.foreground = [counts for _, counts in scans]
        network = ctx.preset.network
        self.model = build_network(network.name, 1, max(self.values) + 1, **network.kwargs).to(ctx.device)
        if self.init is not None:
            from .init import load_pretext_weights

            report = load_pretext_weights(self.model, self.init)
            ctx.logger.log(report.summary(), show=True)  # what was loaded, as the README says
            self.load_report = report.to_dict()
            if self.freeze_encoder:
                for key, param in self.model.named_parameters():
                    param.requires_grad_(key not in set(report.loaded))
        self.forward = ctx.wrap(self.model)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=ctx.preset.train.include_background)
        self.multiple = size_multiple(network.name, network.kwargs, default=8)

    def _map_classes(self, mapping: dict[int, int]) -> None:
        """Relabel the label maps (each read, through a table) and the names when values are not their own classes."""
        if all(v == c for v, c in mapping.items()):
            return
        table = np.zeros(256, dtype=np.uint8)
        for value, index in mapping.items():
            table[value] = index
        relabel = lambda pairs: [(image, label.relabelled(table)) for image, label in pairs]
        self.train_set, self.val = relabel(self.train_set), relabel(self.val)
        names = {e["value"]: e["name"] for e in parse_labels(self.labels_text, list(mapping))}
        self.labels_text = ",".join(f"{mapping[v]}:{name}" for v, name in names.items())
        self.label_names = {mapping[v]: n for v, n in self.label_names.items() if v in mapping}
        self.values = sorted(mapping.values())

    def _split(self, ctx: TrainContext, images: list, labels: list) -> tuple[list, list]:
        """Seeded train/validation split; ``train_cases`` keeps the first N training cases (label efficiency)."""
        order = np.random.default_rng(ctx.seed).permutation(len(images))
        n_val = held_out_count(ctx, len(images), self.val_fraction)
        train = [(images[i], labels[i]) for i in order[n_val:]]
        if self.train_cases is not None:
            if not 1 <= self.train_cases <= len(train):
                raise DatasetError(f"--train-cases must be between 1 and the {len(train)} training cases, got {self.train_cases}.")
            train = train[: self.train_cases]
        return train, [(images[i], labels[i]) for i in order[:n_val]]

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def _sample(self, ctx: TrainContext, step: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = ctx.generator(step, index)
        case = int(torch.randint(len(self.train_set), (1,), generator=g))
        image, label = self.train_set[case]
        patch = ctx.preset.train.patch
        if patch is not None:
            image, label = self._crop(ctx, g, image, label, self.foreground[case], patch)
        else:
            image, label = image.load(), label.load()
        flips = [d + 1 for d in range(3) if torch.rand(1, generator=g).item() < ctx.preset.train.flip_p]
        if flips:
            image, label = image.flip(flips), label.flip(flips)
        return image, label

    @staticmethod
    def _crop(ctx: TrainContext, g: torch.Generator, image: Any, label: Any, counts: np.ndarray, patch) -> tuple[torch.Tensor, torch.Tensor]:
        """A patch centred on a random foreground voxel with probability ``pos_fraction``, else anywhere
        (``counts``: the label's foreground voxels per slice; only the patch is read)."""
        sizes, total = image.shape[1:], int(counts.sum())
        if torch.rand(1, generator=g).item() < ctx.preset.train.pos_fraction and total > 0:
            centre = label.nth_nonzero(int(torch.randint(total, (1,), generator=g)), counts)
            start = [min(max(0, c - p // 2), max(0, s - p)) for c, p, s in zip(centre, patch, sizes)]
        else:
            start = [int(torch.randint(max(1, s - p + 1), (1,), generator=g)) for s, p in zip(sizes, patch)]
        box = (slice(None), *(slice(a, a + p) for a, p in zip(start, patch)))
        return image[box], label[box]

    def batch(self, ctx: TrainContext, step: int, indices: range) -> Any:
        samples = [self._sample(ctx, step, i) for i in indices]
        x = torch.stack([s[0] for s in samples])
        y = torch.stack([s[1] for s in samples]).long()
        x, _ = pad_to_multiple(x, self.multiple)
        y, _ = pad_to_multiple(y, self.multiple)
        return x, y

    def losses(self, ctx: TrainContext, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        out = self.forward(x)
        out = out[0] if isinstance(out, list) else out
        return {"total": self.loss(out, y)}

    def predict(self, ctx: TrainContext, image: torch.Tensor) -> torch.Tensor:
        """(1, D, H, W) image -> (D, H, W) label map: sliding windows of the training patch (Gaussian)."""
        from monai.inferers import sliding_window_inference

        x, crop = pad_to_multiple(image[None], self.multiple)
        patch = ctx.preset.train.patch
        roi = tuple(min(p, s) for p, s in zip(patch, x.shape[2:])) if patch else tuple(x.shape[2:])

        def network(window: torch.Tensor) -> torch.Tensor:
            out = self.model(window)
            return out[0] if isinstance(out, list) else out

        logits = sliding_window_inference(x, roi, 2, network, overlap=ctx.preset.train.overlap, mode="gaussian")
        return logits[(0, slice(None), *crop)].argmax(0)

    def validate(self, ctx: TrainContext, step: int) -> dict[str, Any] | None:
        if not self.val:
            return None
        from monai.metrics import compute_dice

        scores = {v: [] for v in self.values}
        for mapped_image, mapped_label in self.val:  # one whole case in memory at a time
            image, label = mapped_image.load(), mapped_label.load()
            pred = self.predict(ctx, image)
            values = torch.tensor(self.values, device=pred.device).view(-1, 1, 1, 1)
            dice = compute_dice((pred[None] == values)[None].float(), (label == values)[None].float(), include_background=True, ignore_empty=True)
            for v, d in zip(self.values, dice[0].tolist()):
                if not np.isnan(d):  # both empty: not scored
                    scores[v].append(d)
        per_class = {self._name(v): float(np.mean(s)) for v, s in scores.items() if s}
        mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
        return {"score": mean, "dice": mean, "per_class": per_class}

    def _name(self, value: int) -> str:
        return self.label_names.get(value) or next((e["name"] for e in parse_labels(self.labels_text, [value])), str(value))

    def export(self, ctx: TrainContext, checkpoint: dict) -> dict[str, Path]:
        from ..config import to_dict

        labels = parse_labels(self.labels_text, self.values)
        for entry in labels:
            entry["name"] = self.label_names.get(entry["value"], entry["name"])
        network = ctx.preset.network
        meta = {
            "network": {"name": network.name, "kwargs": {**network.kwargs, "in_channels": 1, "out_channels": max(self.values) + 1}},
            "task": "segmentation",
            "preprocessing": to_dict(ctx.preset.preprocess),
            "labels": labels,
            "provenance": {
                "data": str(self.data),
                "steps": int(checkpoint["step"]),
                "cache": self.cache_info,
                "init": self.load_report,
                "train_cases": len(self.train_set),
                "freeze_encoder": self.freeze_encoder,
            },
            "metrics": {"validation": checkpoint.get("best", {})},
            "preset": to_dict(ctx.preset),
        }
        bundle = write_bundle(ctx.run_dir / "bundle", checkpoint["modules"]["model"], meta)
        return {"bundle": bundle.path}
