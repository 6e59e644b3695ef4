"""``import-weights --format swinunetr-seg``: a MONAI SwinUNETR segmentation checkpoint (e.g. VoCo's
released BTCV model, 14 classes) as a segmentation bundle with organ names, so a user with that file gets a
real multi-organ model. Feature size and class count are read from the tensor shapes; what the file does
not say (preprocessing, roi) is recorded as assumed, from VoCo's BTCV fine-tuning recipe."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, WeightsError
from .checkpoint import read_checkpoint, stated_merging, unwrap_state
from .imported_bundle import check_out_dir, write_imported_bundle
from .keymap import MatchReport, match_state

__all__ = ["LABEL_SETS", "import_swinunetr_segmentation"]

# BTCV's 13 organs, in the label order of its dataset.json (value: name, RGB 0-255).
LABEL_SETS = {
    "btcv": [
        "spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
        "inferior vena cava", "portal and splenic veins", "pancreas", "right adrenal gland", "left adrenal gland",
    ],
}
_COLORS = [(157, 108, 162), (185, 102, 83), (185, 102, 83), (139, 150, 98), (211, 171, 143), (221, 130, 101), (216, 132, 105),
           (224, 97, 76), (0, 151, 206), (0, 112, 165), (249, 180, 111), (244, 214, 49), (244, 214, 49)]


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "model.", "net."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


_MERGING_FROM = ("the file records no variant: MONAI <= 1.4's 3-D PatchMerging, which VoCo's fine-tuning (MONAI 1.3.0) "
                 "and SwinUNETR releases were trained with")


def _labels(names: str | None, classes: int) -> list[dict]:
    if names is None or names in LABEL_SETS:
        names_list = LABEL_SETS.get(names or "", [])
    else:
        names_list = [n.partition(":")[2].strip() for n in names.split(",")]
    if names and len(names_list) != classes - 1:
        raise ConfigError(f"--labels {names!r} names {len(names_list)} classes, the checkpoint has {classes - 1} (plus background).")
    return [{"value": v, "name": names_list[v - 1] if names_list else f"label {v}", "color": list(_COLORS[(v - 1) % len(_COLORS)])} for v in range(1, classes)]


def import_swinunetr_segmentation(path: Path, out_dir: Path, labels: str | None = None, allow_partial: bool = False) -> MatchReport:
    """Write a segmentation bundle from a SwinUNETR checkpoint; returns the match report."""
    from ..nets.builders import build_network

    check_out_dir(out_dir)
    checkpoint = read_checkpoint(path)
    foreign = {_strip_prefixes(k): v for k, v in unwrap_state(checkpoint, path).items()}
    embed, out = foreign.get("swinViT.patch_embed.proj.weight"), foreign.get("out.conv.conv.weight")
    if embed is None or out is None:
        raise WeightsError(f"{path}: not a SwinUNETR segmentation checkpoint (no swinViT.patch_embed.proj / out.conv.conv weights).")
    feature_size, in_channels, classes = int(embed.shape[0]), int(embed.shape[1]), int(out.shape[0])
    use_v2 = any(k.startswith("swinViT.layers1c") for k in foreign)
    stated = stated_merging(checkpoint, path)
    merging = stated or "v1.3"
    kwargs = {"feature_size": feature_size, "use_v2": use_v2, "in_channels": in_channels, "out_channels": classes, "merging": merging}
    network = build_network("swinunetr", **kwargs)
    state, report = match_state(network.state_dict(), foreign, lambda k: k, allow_partial, source=str(path))
    entries = _labels(labels, classes)
    meta = {
        "network": {"name": "swinunetr", "kwargs": kwargs},
        "task": "segmentation",
        "preprocessing": {"orientation": "RAS", "spacing": [1.5, 1.5, 1.5], "intensity": "window:-175,250"},
        "labels": entries,
        "provenance": {
            "licence": "not stated in the file; see the releasing repository",
            "assumed": {
                "preprocessing": {"value": "RAS, 1.5 mm, window -175..250 HU", "from": "VoCo Finetune/BTCV recipe (preset voco-btcv)"},
                "patch": {"value": [96, 96, 96], "from": "VoCo Finetune/BTCV roi"},
                "merging": {"value": merging, "from": "the file's 'merging' entry" if stated else _MERGING_FROM},
            },
        },
        "preset": {"train": {"patch": [96, 96, 96], "overlap": 0.75}},
    }
    network.load_state_dict(state, strict=not allow_partial)
    write_imported_bundle(out_dir, network.state_dict(), meta, path, "swinunetr-seg", report)
    return report
