"""``ssl3d cache``: build (or check) a training run's preprocessed-volume cache ahead of time, e.g. on CPU
nodes of a cluster, one shard per node; the training command with the same data, preset and
``--cache-dir`` then finds every volume cached and starts at once."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..cli import register_command

__all__: list[str] = []


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="the training data, as the training command gets it")
    parser.add_argument("--cache-dir", required=True, help="the cache folder the training command will get as --cache-dir")
    parser.add_argument("--workers", type=int, metavar="N", help="preprocessing processes [the cores, bounded by memory]")
    parser.add_argument("--shard", metavar="K/N", help="build only cases K, K+N, K+2N, ... (one node of N; K from 0)")
    parser.add_argument("--strict", action="store_true", help="fail on an unreadable volume instead of skipping it")
    parser.add_argument("--preset", help="the training's preset (see 'ssl3d info --presets')")
    parser.add_argument("--config", metavar="FILE", help="the training's settings as a JSON/YAML preset file (e.g. with --spacing or "
                                                          "an --init's intensity already in it)")
    parser.add_argument("--events", metavar="FILE|-", help="write JSON-lines events to FILE, or to stdout with '-'")


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    from ..errors import ConfigError

    if text is None:
        return None
    try:
        shard, shards = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must be K/N (e.g. 0/4), got {text!r}.") from None
    if not 0 <= shard < shards:
        raise ConfigError(f"--shard K/N needs 0 <= K < N, got {text!r}.")
    return shard, shards


def _run(args: argparse.Namespace) -> int:
    from ..config import get_preset, load_config
    from ..data.datasets import VolumeCache, find_cases
    from ..disk_space import human_bytes
    from ..errors import ConfigError
    from ..events import EventWriter
    from ..progress import TextProgress

    shard = _parse_shard(args.shard)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}.")
    if args.config:
        preset = load_config(args.config)
        if args.preset and args.preset != preset.name:
            raise ConfigError(f"--preset {args.preset} disagrees with --config {args.config}, which holds preset {preset.name!r}.")
    elif args.preset:
        preset = get_preset(args.preset)
    else:
        raise ConfigError("give the preset (--preset NAME) or the run's settings (--config FILE) that the training will use.")
    labels = preset.method in ("segmentation", "interactive")
    with EventWriter(args.events) as events:
        cache = VolumeCache(find_cases(args.data, labels=labels), preset.preprocess, Path(args.cache_dir), args.strict, events)
        todo = [i for i in cache.missing() if shard is None or i % shard[1] == shard[0]]
        need = cache.estimated_bytes(todo)  # the build's own disk check reuses these header reads
        shown = args.events != "-"
        if shown:
            per = f", about {human_bytes(need / len(todo))} each" if todo else ""
            print(f"{cache.dir}: {len(cache.cases)} volumes, {len(todo)} to preprocess{f' (shard {args.shard})' if shard else ''}: "
                  f"about {human_bytes(need)} at preset {preset.name}'s spacing and {preset.preprocess.dtype}{per}", flush=True)
        started = time.monotonic()
        events.emit("start", step=0, total=len(todo), message=f"cache {args.data}")
        with TextProgress("cache", len(todo), "volume", enabled=shown) as text:
            def progress(done: int, total: int) -> None:
                events.emit("progress", phase="cache", step=done, total=total, message=f"cache: {done} of {total} volumes preprocessed")
                text.update(done, total)

            if shard is not None:
                built = cache.build_shard(*shard, args.workers, progress)
                summary = {"shard": args.shard, "preprocessed": built, "missing": len(cache.missing())}
            else:
                cache.build(args.workers, progress)
                summary = {**cache.info(), "preprocessed": cache.preprocessed}
        summary["seconds"] = round(time.monotonic() - started, 1)
        events.emit("done", step=len(todo), total=len(todo), outputs={"cache": str(cache.dir)}, summary=summary)
    if shown:
        if shard is not None:
            print(f"shard {args.shard}: {summary['preprocessed']} volumes preprocessed in {summary['seconds']} s; "
                  f"{summary['missing']} of the dataset still missing (the other shards)")
        else:
            print(f"{summary['entries']} volumes cached ({summary['preprocessed']} preprocessed now), {human_bytes(summary['bytes'])}, "
                  f"{summary['skipped']} skipped, {summary['seconds']} s")
        print(f"cache: {cache.dir}")
    return 0


register_command(
    "cache", "build the preprocessed-volume cache of a training run ahead of time (or one shard of it)", _add_arguments, _run,
    description=__doc__.split("\n\n")[0].replace("\n", " ") + " Example, on 4 nodes: ssl3d cache --data /data/ct --preset voco-v2 "
                "--cache-dir /shared/cache --shard K/4 (K = 0..3), then ssl3d pretrain --method voco --preset voco-v2 --data /data/ct "
                "--cache-dir /shared/cache ...")
