"""``fiftyone-prune`` command line: parses arguments and calls the SDK, nothing more."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _load_or_create_dataset(name, images_dir=None, persistent=True):
    import fiftyone as fo

    if images_dir:
        if not os.path.isdir(images_dir):
            raise SystemExit(f"error: --images-dir {images_dir!r} is not a directory")
        if fo.dataset_exists(name):
            dataset = fo.load_dataset(name)
            known = set(dataset.values("filepath"))
            import fiftyone.core.utils as fou  # noqa: F401
            from fiftyone.utils.data import parse_images_dir

            new = [p for p in parse_images_dir(images_dir, recursive=True)
                   if os.path.abspath(p) not in known]
            if new:
                dataset.add_images(new)
            return dataset
        dataset = fo.Dataset.from_images_dir(images_dir, recursive=True, name=name,
                                             persistent=persistent)
        return dataset
    if not fo.dataset_exists(name):
        raise SystemExit(
            f"error: no FiftyOne dataset named {name!r}; pass --images-dir DIR to create it "
            f"from a folder of images (existing datasets: {', '.join(fo.list_datasets()) or 'none'})"
        )
    return fo.load_dataset(name)


def _add_embed_args(p):
    p.add_argument("--model", default="swav_resnet50",
                   help="swav_resnet50 (default, the paper's), efficientnet_lite0 (offline), "
                        "or a FiftyOne zoo model name")
    p.add_argument("--embeddings-field", default=None,
                   help="field to store vectors in (default: swav_embedding, or <model>_embedding)")
    p.add_argument("--checkpoint", default=None, help="local swav_800ep_pretrain.pth.tar")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: auto)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--no-skip-existing", action="store_true",
                   help="re-embed samples that already have a vector")


def _default_field(model):
    return "swav_embedding" if model == "swav_resnet50" else f"{model.replace('-', '_')}_embedding"


def cmd_embed(args):
    import fiftyone_prune as fop

    dataset = _load_or_create_dataset(args.dataset, args.images_dir)
    field = args.embeddings_field or _default_field(args.model)
    result = fop.compute_embeddings(
        dataset, model=args.model, embeddings_field=field, batch_size=args.batch_size,
        num_workers=args.num_workers, device=args.device,
        skip_existing=not args.no_skip_existing, checkpoint_path=args.checkpoint,
        image_size=args.image_size, progress=True,
    )
    print(json.dumps(result.to_dict(), indent=2))
    return 0 if result.num_failed == 0 else 3


def _parse_k(text):
    if text is None:
        return None
    try:
        ks = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"--num-clusters must be an integer or comma-separated integers, "
                         f"got {text!r}")
    return ks[0] if len(ks) == 1 else ks


def cmd_score(args):
    import fiftyone_prune as fop

    dataset = _load_or_create_dataset(args.dataset)
    result = fop.compute_prototype_scores(
        dataset, embeddings_field=args.embeddings_field, run_key=args.run_key,
        method=args.method, num_clusters=_parse_k(args.num_clusters),
        label_field=args.label_field, seed=args.seed, niter=args.niter,
        overwrite=args.overwrite, progress=True,
    )
    print(json.dumps(result.to_dict(), indent=2))
    return 0


def cmd_runs(args):
    import fiftyone_prune as fop

    dataset = _load_or_create_dataset(args.dataset)
    if args.delete:
        print(f"deleted run {args.delete!r} and fields {fop.delete_run(dataset, args.delete)}")
        return 0
    for key in fop.list_runs(dataset):
        info = fop.get_run_info(dataset, key)
        print(f"{key}\t{info.config.kind}\t{info.timestamp}")
    return 0


def cmd_demo(args):
    import fiftyone_prune as fop

    dataset = fop.load_demo_dataset(args.dataset, max_samples=args.max_samples,
                                    overwrite=args.overwrite, persistent=True)
    print(f"Demo dataset {dataset.name!r}: {len(dataset)} real MNIST digit images "
          f"(labels in 'ground_truth')")
    result = fop.compute_embeddings(dataset, model="efficientnet_lite0",
                                    embeddings_field="embedding", image_size=args.image_size,
                                    progress=True)
    print(json.dumps(result.to_dict(), indent=2))
    print(f"Open it in the App: python -c \"import fiftyone as fo; "
          f"fo.launch_app(fo.load_dataset('{dataset.name}')).wait()\"")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fiftyone-prune",
        description="Data pruning by self-supervised prototypes for FiftyOne datasets",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("embed", help="compute embeddings for a dataset")
    p.add_argument("dataset", help="FiftyOne dataset name")
    p.add_argument("--images-dir", default=None,
                   help="create the dataset from (or add new images of) this folder")
    _add_embed_args(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("score", help="score samples by distance to prototypes")
    p.add_argument("dataset")
    p.add_argument("--embeddings-field", required=True)
    p.add_argument("--run-key", default="prototypes")
    p.add_argument("--method", choices=["kmeans", "supervised"], default="kmeans")
    p.add_argument("--num-clusters", default=None, help="k, or comma-separated k values")
    p.add_argument("--label-field", default=None)
    p.add_argument("--seed", type=int, default=51)
    p.add_argument("--niter", type=int, default=25)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("runs", help="list (or delete) the fiftyone-prune runs of a dataset")
    p.add_argument("dataset")
    p.add_argument("--delete", metavar="RUN_KEY", default=None,
                   help="delete this run and exactly the fields/tags/views it created")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("demo", help="run the pipeline on bundled real images (offline)")
    p.add_argument("--dataset", default="fiftyone-prune-demo")
    p.add_argument("--max-samples", type=int, default=1000)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--overwrite", action="store_true", help="rebuild the demo dataset")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from fiftyone_prune.core.models import WeightsNotFoundError

        if isinstance(e, WeightsNotFoundError):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":  # python -m fiftyone_prune.cli
    sys.exit(main())
