"""Benchmark: embedding throughput of ``compute_embeddings`` vs a bare forward pass.

Writes N real photos (random 400x300 crops of the two colour photos that ship with
scikit-learn, saved as JPEG), then in this one process:

1. bare: the same model on the same images, already decoded and transformed in memory,
   same batch size, ``torch.inference_mode`` (the ceiling);
2. pipeline: ``fop.compute_embeddings`` on a FiftyOne dataset of those files (decode,
   transform, forward, database writes).

    .venv/bin/python benchmarks/embedding_throughput.py --model efficientnet_lite0 -n 128
    .venv/bin/python benchmarks/embedding_throughput.py --model swav_resnet50 -n 64

``swav_resnet50`` uses a checkpoint generated in the official format (random weights; the
real file is not downloadable here); speed does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402


def write_photos(folder, n, seed=0):
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        img = photos[i % len(photos)]
        x, y = int(rng.integers(0, img.width - 400)), int(rng.integers(0, img.height - 300))
        path = os.path.join(folder, f"photo_{i:05d}.jpg")
        img.crop((x, y, x + 400, y + 300)).save(path, quality=90)
        paths.append(path)
    return paths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0",
                    choices=["efficientnet_lite0", "swav_resnet50"])
    ap.add_argument("-n", "--num-images", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--num-workers", type=int, default=None)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    import fiftyone as fo
    import fiftyone_prune as fop
    from fiftyone_prune.core import models

    tmp = tempfile.mkdtemp(prefix="fop-bench-")
    paths = write_photos(tmp, args.num_images)
    checkpoint = None
    if args.model == "swav_resnet50":
        import sys

        sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
        from tests.unit.test_models import official_format_checkpoint

        checkpoint = os.path.join(tmp, models.SWAV_FILENAME)
        official_format_checkpoint(checkpoint)
    model = (models.swav_resnet50(checkpoint, args.image_size) if checkpoint
             else models.efficientnet_lite0(args.image_size))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    transform = model.transform()
    batches = [torch.stack([transform(Image.open(p)) for p in paths[s:s + args.batch_size]])
               for s in range(0, len(paths), args.batch_size)]
    module = model.module.to(device).eval()
    with torch.inference_mode():
        module(batches[0].to(device))  # warm-up
        t = time.perf_counter()
        for b in batches:
            if device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    module(b.to(device).contiguous(memory_format=torch.channels_last)).float().cpu()
            else:
                module(b).numpy()
        if device.type == "cuda":
            torch.cuda.synchronize()
        bare = len(paths) / (time.perf_counter() - t)

    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=p) for p in paths])
    t = time.perf_counter()
    result = fop.compute_embeddings(dataset, model=model, embeddings_field="emb",
                                    batch_size=args.batch_size, num_workers=args.num_workers,
                                    device=args.device)
    pipe = len(paths) / (time.perf_counter() - t)
    assert result.num_embedded == len(paths)

    print(f"model={args.model} images={len(paths)} size={args.image_size} "
          f"batch={args.batch_size} device={device} torch_threads={torch.get_num_threads()}")
    print(f"bare forward:  {bare:8.2f} images/s")
    print(f"pipeline:      {pipe:8.2f} images/s")
    print(f"ratio pipeline / bare: {pipe / bare:.2f}")
    fo.delete_dataset(dataset.name)


if __name__ == "__main__":
    main()
