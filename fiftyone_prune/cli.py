"""``fiftyone-prune`` command line: parses arguments and calls the SDK, nothing more."""

from __future__ import annotations

import argparse
import json
import os
import sys

from fiftyone_prune.core.params import (
    ParameterError, SelectionSpec, keep_shortfall, parse_fractions, parse_num_clusters,
    selection_spec_from_inputs,
)


#: the label field of a dataset made from class folders (``DIR/<class>/<image>``)
FOLDER_LABEL_FIELD = "ground_truth"


def class_folder_labels(images_dir, images) -> dict | None:
    """The class of each image when the folder is a classification tree: every image in
    a first-level subfolder (its class), at least two of them. None otherwise."""
    root = os.path.realpath(images_dir)
    labels = {}
    for path in images:
        parts = os.path.relpath(os.path.realpath(path), root).split(os.sep)
        if len(parts) != 2:
            return None
        labels[path] = parts[0]
    return labels if len(set(labels.values())) >= 2 else None


def _load_or_create_dataset(name, images_dir=None, persistent=True):
    """The dataset ``name``; with ``images_dir`` created from that folder (its images
    labelled in ``ground_truth`` when they sit in class folders), or given the folder's
    new images. A dataset created here is ``persistent`` only when asked."""
    import fiftyone as fo

    if images_dir:
        from fiftyone.utils.data import parse_images_dir

        if not os.path.isdir(images_dir):
            raise SystemExit(f"error: --images-dir {images_dir!r} is not a directory")
        images = [os.path.abspath(p) for p in parse_images_dir(images_dir, recursive=True)]
        if not images:
            raise ValueError(f"no images found in {images_dir!r} (searched recursively); "
                             f"point at a folder that holds image files")
        labels = class_folder_labels(images_dir, images)
        if fo.dataset_exists(name):
            dataset = fo.load_dataset(name)
            known = set(dataset.values("filepath"))
            images = [p for p in images if p not in known]
        else:
            dataset = fo.Dataset(name, persistent=persistent)
        if labels is not None:
            print(f"labels from class folders: {FOLDER_LABEL_FIELD!r} "
                  f"({len(set(labels.values()))} classes)")
        dataset.add_samples([
            fo.Sample(filepath=p) if labels is None else
            fo.Sample(filepath=p, **{FOLDER_LABEL_FIELD: fo.Classification(label=labels[p])})
            for p in images])
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
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"],
                   help="forward-pass arithmetic: fp32 (exact, default), fp16 (CUDA only), "
                        "bf16; recorded with the field, a resume must use the same")
    p.add_argument("--no-skip-existing", action="store_true",
                   help="re-embed samples that already have a vector")


def _default_field(model):
    return "swav_embedding" if model == "swav_resnet50" else f"{model.replace('-', '_')}_embedding"


def cmd_embed(args):
    import fiftyone_prune as fop

    import fiftyone as fo

    from fiftyone_prune.core.models import check_checkpoint_path

    sharding = _shard_kwargs(args)
    check_checkpoint_path(args.checkpoint)  # a typo costs no dataset
    created = bool(args.images_dir) and not fo.dataset_exists(args.dataset)
    dataset = _load_or_create_dataset(args.dataset, args.images_dir)
    field = args.embeddings_field or _default_field(args.model)
    try:
        result = fop.compute_embeddings(
            dataset, model=args.model, embeddings_field=field, batch_size=args.batch_size,
            num_workers=args.num_workers, device=args.device,
            skip_existing=not args.no_skip_existing, checkpoint_path=args.checkpoint,
            image_size=args.image_size, precision=args.precision, progress=True,
            **sharding, **_patches(args),
        )
    except ParameterError:
        # refused before any work: the dataset this command just made holds nothing of
        # value (a failure during the run keeps it, to resume)
        if created:
            dataset.delete()
        raise
    if isinstance(result, dict):  # --delegate: the queued run's status
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(json.dumps(result.to_dict(), indent=2))
    return 0 if result.num_failed == 0 else 3


def _add_shard_args(p):
    p.add_argument("--shards", type=int, default=None, metavar="M",
                   help="split the run into M disjoint, resumable shards")
    p.add_argument("--delegate", action="store_true",
                   help="queue the shards for `fiftyone delegated launch` workers and return")


def _shard_kwargs(args):
    shards, delegate = getattr(args, "shards", None), getattr(args, "delegate", False)
    if delegate and shards is None:
        raise ParameterError("--delegate queues shards: give their number with --shards M",
                             "num_shards")
    return {} if shards is None else dict(num_shards=shards, delegate=delegate)


def _patches(args):
    field = getattr(args, "patches_field", None)
    return {} if field is None else dict(patches_field=field)


def _add_patches_arg(p, what):
    p.add_argument("--patches-field", default=None, metavar="FIELD",
                   help=f"a Detection(s) field: {what} each object on its label instead of "
                        f"each image")


def cmd_score(args):
    import fiftyone_prune as fop

    num_clusters = parse_num_clusters(args.num_clusters)
    sharding = _shard_kwargs(args)
    dataset = _load_or_create_dataset(args.dataset)
    result = fop.compute_prototype_scores(
        dataset, embeddings_field=args.embeddings_field, run_key=args.run_key,
        method=args.method, num_clusters=num_clusters,
        label_field=args.label_field, seed=args.seed, niter=args.niter,
        overwrite=args.overwrite, progress=True, **sharding, **_patches(args),
    )
    print(json.dumps(result if isinstance(result, dict) else result.to_dict(), indent=2,
                     default=str))
    return 0


def _shard_line(status):
    from fiftyone_prune.sdk.shards import describe_progress

    return f"  shards: {describe_progress(status)}"


def cmd_requeue(args):
    from fiftyone_prune.sdk import shards

    dataset = _load_or_create_dataset(args.dataset)
    indices = shards.requeue_stale_shards(dataset, args.run_key, delegate=not args.here,
                                          include_failed=args.failed,
                                          stale_after=args.stale_after)
    verb = "ran" if args.here else "re-queued"
    print(f"{verb} shard(s) {indices or 'none (no stale shard)'}")
    print(_shard_line(shards.shard_status(dataset, args.run_key, args.stale_after)))
    return 0


def cmd_purge(args):
    import fiftyone_prune as fop

    dataset = _load_or_create_dataset(args.dataset)
    report = fop.purge(dataset, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for what, names in report.items():
        print(f"{verb} {what.replace('_', ' ')}: {', '.join(names) or 'none'}")
    return 0


def cmd_runs(args):
    import fiftyone_prune as fop

    dataset = _load_or_create_dataset(args.dataset)
    if args.delete:
        print(f"deleted run {args.delete!r} and fields {fop.delete_run(dataset, args.delete)}")
        return 0
    from fiftyone_prune.sdk import shards
    from fiftyone_prune.sdk.runs import run_status

    sharded = shards.list_sharded_runs(dataset)
    for key in sharded:  # looking heals: shards whose worker died are requeued
        healed = shards.heal(dataset, key, check_claims=True)
        if healed:
            print(f"{key}: re-queued shard(s) {healed} (their worker died, or they failed "
                  f"with tries left)")
    for key in fop.list_runs(dataset):
        info = fop.get_run_info(dataset, key)
        print(f"{key}\t{info.config.kind}\t{info.timestamp}\t{run_status(dataset, key)}")
        if key in sharded:
            print(_shard_line(shards.shard_status(dataset, key)))
    for key in sharded:  # sharded embedding runs: no FiftyOne run, only their record
        if key not in fop.list_runs(dataset):
            print(f"{key}\tembeddings\t\t{_shard_line(shards.shard_status(dataset, key))}")
    return 0


def selection_spec(args) -> SelectionSpec:
    """The selection options as the SDK takes them, through the one function the App's
    forms and panel use too; ``--keep`` is read as Python reads a number (``1`` is a
    count, ``1.0`` a fraction)."""
    return selection_spec_from_inputs(vars(args))


def _print_selection(dataset, name):
    import fiftyone_prune as fop

    info = fop.get_run_info(dataset, f"{name}_selection").config
    groups = fop.load_run_results(dataset, f"{name}_selection").groups
    print(f"strategy: {info.chosen_strategy} ({info.strategy_reason})")
    if info.strategy == "auto":
        _print_quick_evaluation_hint(dataset, info)
    print(f"kept {info.num_kept}, pruned {info.num_pruned}, duplicates {info.num_duplicates}, "
          f"unscored {info.num_unscored}")
    budget = getattr(info, "budget", None)
    shortfall = budget is not None and keep_shortfall(budget, info.num_kept,
                                                      info.num_duplicates, info.dedup_eps)
    if shortfall:
        print(f"warning: {shortfall.replace('dedup_eps', '--dedup-eps')}", file=sys.stderr)
    print("group\tkept/total")
    for group, c in groups.items():
        print(f"{group}\t{c['kept']}/{c['total']}")
    print(f"tags: {name}:kept / {name}:pruned; saved view: {name}-kept")


def _print_quick_evaluation_hint(dataset, info):
    from fiftyone_prune.sdk.advice import quick_evaluation_offer

    offer = quick_evaluation_offer(dataset, info.run_key,
                                   info.num_kept / max(1, info.num_kept + info.num_pruned),
                                   info.balance, info.label_field)
    if offer:
        kw = offer["kwargs"]
        print(f"hint: {offer['message']}: fiftyone-prune evaluate {dataset.name} "
              f"--label-field {kw['label_field']} --run-key {kw['run_key']} "
              f"--fractions {kw['fractions'][0]} --balance {kw['balance'] or 'none'}; "
              f"then select again")


def cmd_select(args):
    import fiftyone_prune as fop

    spec = selection_spec(args)
    dataset = _load_or_create_dataset(args.dataset)
    fop.select_samples(dataset, run_key=args.run_key, name=args.name, spec=spec,
                       overwrite=args.overwrite)
    _print_selection(dataset, args.name or args.run_key)
    return 0


def cmd_export(args):
    import fiftyone_prune as fop
    from fiftyone_prune.sdk.export import newest_selection

    dataset = _load_or_create_dataset(args.dataset)
    # the App's default too: the selection made last
    name = args.selection or newest_selection(dataset)
    if name is None:
        raise ValueError(f"No selection on {dataset.name!r}; run 'fiftyone-prune select' "
                         f"first")
    view_name = f"{name}-kept"
    if not dataset.has_saved_view(view_name):
        raise ValueError(f"No selection {name!r} on {dataset.name!r} (saved view {view_name!r} "
                         f"missing); run 'fiftyone-prune select' first")
    report = fop.export_kept_samples(dataset.load_saved_view(view_name), args.export_dir,
                                     dataset_type=args.format, label_field=args.label_field,
                                     overwrite=args.overwrite, selection=name)
    print(json.dumps(report, indent=2))
    return 0


def _pipeline_options(args):
    """The pipeline's parsed options, read before any dataset is made or embedded, so
    that a typo fails in a second, not after hours of embedding."""
    return selection_spec(args), parse_num_clusters(args.num_clusters)


def _pipeline(dataset, args, model, image_size, embeddings_field, options, overwrite,
              first_result=None):
    """Embed, score, select and export. ``overwrite``: whether the scoring run and the
    selection ``--run-key`` may replace existing ones (checked before any work);
    ``first_result()`` is called once the embeddings are computed."""
    import fiftyone_prune as fop
    from fiftyone_prune.sdk.export import check_export_dir

    spec, num_clusters = options
    if args.export:  # before hours of embedding, not after
        check_export_dir(dataset, args.export, args.overwrite_export)
    if not overwrite:
        _check_run_key_free(dataset, args.run_key)

    emb = fop.compute_embeddings(dataset, model=model, embeddings_field=embeddings_field,
                                 image_size=image_size, checkpoint_path=getattr(args, "checkpoint", None),
                                 batch_size=args.batch_size,
                                 precision=getattr(args, "precision", "fp32"), progress=True)
    print(f"embedded {emb.num_embedded} (already had: {emb.num_skipped_existing}, "
          f"unreadable: {emb.num_failed})")
    if first_result is not None:
        first_result()
    label_field = args.label_field
    scores = fop.compute_prototype_scores(
        dataset, embeddings_field, run_key=args.run_key,
        num_clusters=num_clusters, label_field=label_field, overwrite=overwrite)
    ks = scores.num_clusters if isinstance(scores.num_clusters, list) else [scores.num_clusters]
    print(f"scored {scores.num_scored} samples with k={','.join(str(k) for k in ks)} "
          f"(fields {scores.distance_field}, {scores.cluster_field})")
    kept = fop.select_samples(dataset, run_key=args.run_key, spec=spec, overwrite=overwrite)
    _print_selection(dataset, args.run_key)
    if args.export:
        report = fop.export_kept_samples(
            kept, args.export, dataset_type=args.format,
            label_field=label_field if args.format != "media" else None,
            overwrite=args.overwrite_export)
        print(f"exported {report['num_samples']} samples to {report['export_dir']} "
              f"({report['dataset_type']}); manifest: {report['manifest']}")
    return 0


def _check_run_key_free(dataset, run_key):
    """``run`` replaces the scoring run and the selection named ``--run-key`` only with
    ``--overwrite``: the SDK's own checks, before any work."""
    from fiftyone_prune.sdk.run_configs import check_key_free
    from fiftyone_prune.sdk.selection import check_selection_name_free

    check_key_free(dataset, run_key, False, "prototypes")
    try:
        check_selection_name_free(dataset, run_key, False)
    except ParameterError as e:  # run names its selection after --run-key
        raise ParameterError(str(e), "run_key") from None


def _check_export_outside(folder, export_dir):
    """An export inside the input folder would be read back as new samples by the next
    ``run`` of that folder."""
    from fiftyone_prune.sdk.export import resolve_export_dir

    inside, target = os.path.realpath(folder), resolve_export_dir(export_dir)
    if target == inside or target.startswith(inside.rstrip(os.sep) + os.sep):
        raise ParameterError(
            f"--export {export_dir!r} is inside the input folder {folder!r}: the next "
            f"run of that folder would add the exported copies as new samples. Choose "
            f"a folder outside it", "export")


def cmd_run(args):
    import fiftyone as fo

    options = _pipeline_options(args)
    source = args.source
    field = args.embeddings_field or _default_field(args.model)
    if not os.path.isdir(source):
        dataset = _load_or_create_dataset(source)
        return _pipeline(dataset, args, args.model, args.image_size, field, options,
                         overwrite=args.overwrite)
    if args.export:
        _check_export_outside(source, args.export)
    name = args.dataset or f"fiftyone-prune-{os.path.basename(os.path.abspath(source))}"
    existed = fo.dataset_exists(name)
    if existed and not args.overwrite:  # before new images are added
        _check_run_key_free(fo.load_dataset(name), args.run_key)
    # a new dataset is made persistent by its first result: a run that fails before
    # (a typo, a model that is not there) leaves nothing in the database
    dataset = _load_or_create_dataset(name, source, persistent=existed)
    if args.label_field is None and dataset.has_field(FOLDER_LABEL_FIELD):
        args.label_field = FOLDER_LABEL_FIELD

    def first_result():
        dataset.persistent = True

    try:
        return _pipeline(dataset, args, args.model, args.image_size, field, options,
                         overwrite=args.overwrite, first_result=first_result)
    except BaseException:
        if not existed and not dataset.persistent:
            dataset.delete()
        elif not existed:
            print(f"note: dataset {name!r} keeps what was computed before the error "
                  f"(rerun to resume); delete it with `fiftyone datasets delete {name}`",
                  file=sys.stderr)
        raise


def _evaluation_progress():
    """A bar when FiftyOne shows bars; else a line every 10 s, so a long evaluation
    still says it is working."""
    import fiftyone as fo

    if fo.config.show_progress_bars:
        return True
    return fo.report_progress(
        lambda pb: print(f"evaluating: probe fit {pb.iteration}/{pb.total}", flush=True),
        dt=10.0)


def cmd_evaluate(args):
    import numbers

    import fiftyone_prune as fop
    from fiftyone_prune.core.params import check_scalar

    fractions = parse_fractions(args.fractions)
    # the scaling options are checked before the (long) evaluation starts
    scaling = not args.no_scaling
    for value, name in ((args.target_accuracy, "target_accuracy"),
                        (args.scaling_plot, "scaling_plot")):
        if value is not None and not scaling:
            raise ParameterError(f"{option_name(name)} needs the scaling view; drop "
                                 f"--no-scaling", name)
    if args.target_accuracy is not None:
        check_scalar(args.target_accuracy, "target_accuracy", numbers.Real, 0, 1, "neither")
    dataset = _load_or_create_dataset(args.dataset)
    result = fop.evaluate_pruning(
        dataset, label_field=args.label_field, run_key=args.run_key,
        fractions=fractions, strategies=[s for s in args.strategies.split(",") if s.strip()],
        seeds=args.seeds, probe=args.probe, balance=None if args.balance == "none" else args.balance,
        test_tag=args.test_tag, test_fraction=args.test_fraction, eval_key=args.eval_key,
        overwrite=args.overwrite, plot_path=args.plot, progress=_evaluation_progress(),
        scaling=scaling, scaling_plot_path=args.scaling_plot,
    )
    print(result.format_table())
    print()
    print("\n".join(result.verdicts))
    if scaling:
        print()
        print(result.format_worth())
    if args.target_accuracy is not None:
        from fiftyone_prune.core.scaling import describe_projection

        print(f"samples needed for held-out accuracy {args.target_accuracy} (95 % intervals):")
        for row in result.samples_needed(args.target_accuracy):
            print(f"  {describe_projection(row)}")
    if result.plot_path:
        print(f"plot: {result.plot_path}")
    if result.scaling_plot_path:
        print(f"scaling plot: {result.scaling_plot_path}")
    return 0


DEMO_EXPORT_DIR = "demo_output/kept"


def cmd_demo(args):
    import fiftyone_prune as fop
    from fiftyone_prune.sdk.export import check_export_dir

    if args.export is None:
        # The demo's own folder: rerunning the demo replaces the export it wrote there
        # last time (recognised by its manifest); anything else found there is refused
        # and kept, as for any folder.
        args.export, args.overwrite_export = DEMO_EXPORT_DIR, True
    args.label_field = "ground_truth"
    options = _pipeline_options(args)
    if args.export:
        check_export_dir(None, args.export, args.overwrite_export)

    dataset = fop.load_demo_dataset(args.dataset, max_samples=args.max_samples,
                                    overwrite=args.overwrite, persistent=True)
    print(f"Demo dataset {dataset.name!r}: {len(dataset)} real MNIST digit images "
          f"(labels in 'ground_truth'); model efficientnet_lite0 (offline ImageNet weights)")
    # the demo's own dataset: a rerun replaces its runs
    _pipeline(dataset, args, "efficientnet_lite0", args.image_size, "embedding", options,
              overwrite=True)
    print(f"Open it in the App: FIFTYONE_PLUGINS_DIR=$PWD .venv/bin/python -c \"import "
          f"fiftyone as fo; fo.launch_app(fo.load_dataset('{dataset.name}')).wait()\"")
    return 0


def _add_select_args(p):
    p.add_argument("--keep", default="0.8",
                   help="a fraction with a decimal point (0.8; 1.0 keeps all) or an integer "
                        "count (5000; 1 keeps one sample), as in Python (default 0.8)")
    p.add_argument("--strategy", default="auto",
                   choices=["auto", "hard", "easy", "random", "ccs", "density"])
    p.add_argument("--balance", default="cluster", choices=["cluster", "class", "none"])
    p.add_argument("--label-field", default=None)
    p.add_argument("--balance-ratio", type=float, default=0.5)
    p.add_argument("--dedup-eps", type=float, default=None,
                   help="SemDeDup first: near-duplicates (cos > 1 - eps) removed")
    p.add_argument("--seed", type=int, default=51)


def _add_pipeline_args(p, labels=True, default_export=None):
    p.add_argument("--run-key", default="prototypes")
    p.add_argument("--num-clusters", default=None)
    _add_select_args(p)
    if not labels:
        p.set_defaults(label_field="ground_truth")
    p.add_argument("--export", default=default_export, help="export the kept subset here")
    p.add_argument("--format", default="fiftyone" if labels else "image_classification_tree")
    p.add_argument("--overwrite-export", action="store_true",
                   help="replace a previous fiftyone-prune export in the export directory "
                        "(anything else is refused, never deleted)")


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
    _add_shard_args(p)
    _add_patches_arg(p, "embed the crop of")
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
    _add_shard_args(p)
    _add_patches_arg(p, "score")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("requeue", help="re-run the stale and failed shards of a sharded run "
                                       "(delegated runs also heal themselves)")
    p.add_argument("dataset")
    p.add_argument("run_key", help="the scoring run key, or the embeddings field")
    p.add_argument("--stale-only", dest="failed", action="store_false", default=True,
                   help="leave the failed shards (by default they are rerun too)")
    p.add_argument("--failed", action="store_true", help=argparse.SUPPRESS)  # the default
    p.add_argument("--here", action="store_true",
                   help="run them in this process instead of queueing them")
    p.add_argument("--stale-after", type=float, default=None, metavar="SECONDS",
                   help="a running shard without progress for this long is stale "
                        "(default 600; a dead worker's shard is stale once its lease expires)")
    p.set_defaults(func=cmd_requeue)

    p = sub.add_parser("runs", help="list (or delete) the fiftyone-prune runs of a dataset")
    p.add_argument("dataset")
    p.add_argument("--delete", metavar="RUN_KEY", default=None,
                   help="delete this run and exactly the fields/tags/views it created")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("purge", help="remove everything fiftyone-prune wrote on a dataset "
                                      "(runs, fields, tags, saved views, queued operations)")
    p.add_argument("dataset")
    p.add_argument("--dry-run", action="store_true", help="list it, remove nothing")
    p.set_defaults(func=cmd_purge)

    p = sub.add_parser("select", help="select the samples to keep (tags + saved view)")
    p.add_argument("dataset")
    p.add_argument("--run-key", default="prototypes", help="the scoring run")
    p.add_argument("--name", default=None, help="selection name (default: the run key)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the tags and saved view of a selection with this name")
    _add_select_args(p)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("export", help="export the kept samples of a selection")
    p.add_argument("dataset")
    p.add_argument("export_dir")
    p.add_argument("--selection", default=None,
                   help="selection name (default: the newest selection, as in the App)")
    p.add_argument("--format", default="fiftyone",
                   help="fiftyone, image_classification_tree, image_classification_csv, "
                        "coco, yolo, voc, media, or a fiftyone.types class name")
    p.add_argument("--label-field", default=None)
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous fiftyone-prune export in EXPORT_DIR (anything "
                        "else is refused, never deleted)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("run", help="embed, score, select and export in one go")
    p.add_argument("source", help="a folder of images (class subfolders give labels in "
                                   "'ground_truth') or a FiftyOne dataset name")
    p.add_argument("--dataset", default=None, help="dataset name when SOURCE is a folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the scoring run and selection --run-key if they exist")
    _add_embed_args(p)
    _add_pipeline_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("evaluate", help="does the kept subset still train as well? "
                                         "(pruning curve vs random)")
    p.add_argument("dataset")
    p.add_argument("--label-field", required=True)
    p.add_argument("--run-key", default="prototypes")
    p.add_argument("--fractions", default="0.1,0.2,0.3,0.5,0.7,0.9")
    p.add_argument("--strategies", default="random,easy,hard,ccs")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--probe", choices=["linear", "cnn"], default="linear")
    p.add_argument("--balance", default="cluster", choices=["cluster", "class", "none"])
    p.add_argument("--test-tag", default=None, help="held-out samples carry this tag")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--eval-key", default=None)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--plot", default=None, help="save the curve as PNG here")
    # the scaling view is on by default: it answers "what is the kept set worth in
    # random samples", and adds only the learning curve's small sizes to the fits
    p.add_argument("--no-scaling", action="store_true",
                   help="skip the scaling view (learning curves, worth in random samples)")
    p.add_argument("--scaling-plot", default=None,
                   help="save the scaling view (log-log error vs samples) as PNG here")
    p.add_argument("--target-accuracy", type=float, default=None,
                   help="also print the samples random data and each strategy need to "
                        "reach this held-out accuracy (e.g. 0.95)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="run the whole pipeline on bundled real images (offline)")
    p.add_argument("--dataset", default="fiftyone-prune-demo")
    p.add_argument("--max-samples", type=int, default=1000)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--overwrite", action="store_true", help="rebuild the demo dataset")
    _add_pipeline_args(p, labels=False)
    p.set_defaults(export=None)  # None: DEMO_EXPORT_DIR, replacing the previous demo export
    p.set_defaults(func=cmd_demo)
    return parser


#: the CLI's name for an SDK argument where it is not ``--`` + the name with dashes
_OPTIONS = {"num_shards": "--shards", "checkpoint_path": "--checkpoint",
            "dataset_type": "--format", "plot_path": "--plot", "export_dir": "EXPORT_DIR",
            "samples": "DATASET"}


def option_name(param: str) -> str:
    """The command-line option that sets SDK argument ``param``."""
    return _OPTIONS.get(param, "--" + param.replace("_", "-"))


#: modules that only an extra installs: ``pip install 'fiftyone-prune[<extra>]'``
_EXTRAS = {"mlxtend": "demo", "sklearn": "demo"}


def cli_words(message: str, args, param: str | None = None) -> str:
    """An SDK message in the CLI's words: the flag to pass, not a Python argument."""
    flag = ("--overwrite-export" if param == "export_dir" and args.command in ("run", "demo")
            else "--overwrite")
    return (message.replace("pass overwrite=True", f"pass {flag}")
            .replace("overwrite=True", flag)
            .replace("checkpoint_path=", "--checkpoint ")
            .replace("model='efficientnet_lite0'", "--model efficientnet_lite0")
            .replace("fop.compute_embeddings()", "fiftyone-prune embed"))


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ParameterError as e:
        # the option to change first, then the SDK's own explanation
        print(f"error: {option_name(e.param)}: {cli_words(str(e), args, e.param)}",
              file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        extra = _EXTRAS.get(missing)
        fix = (f"install the [{extra}] extra: pip install 'fiftyone-prune[{extra}]'"
               if extra else f"install it: pip install {missing}")
        print(f"error: {args.command} needs the Python package {missing!r}, which is not "
              f"installed; {fix}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {cli_words(str(e), args)}", file=sys.stderr)
        return 2
    except Exception as e:
        from fiftyone_prune.core.models import WeightsNotFoundError

        if isinstance(e, WeightsNotFoundError):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":  # python -m fiftyone_prune.cli
    sys.exit(main())
