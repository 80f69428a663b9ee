"""App operators: each parses its form and calls one SDK function; the long ones show
its progress while they run (``common.execute_with_progress``)."""

from __future__ import annotations

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_prune.plugin import common
from fiftyone_prune.sdk import validation



def _reload(ctx, result):
    return [ctx.ops.reload_dataset()]


class ComputeEmbeddings(foo.Operator):
    @property
    def config(self):
        return common.operator_config(
            name="compute_embeddings",
            label="Prune: compute embeddings",
            description=(
                "Embed images with SwAV ResNet-50 (the data-pruning paper's model) or "
                "another model and store the vectors as a sample field"
            ),
            icon="/assets/embed.svg",
        )

    def resolve_execution_options(self, ctx):
        return common.execution_options(ctx)

    def resolve_input(self, ctx):
        from fiftyone_prune.core.models import BUILTIN_MODELS

        inputs = types.Object()
        common.add_view_target(ctx, inputs)
        models = types.RadioGroup()
        models.add_choice("swav_resnet50", label="SwAV ResNet-50 (paper; needs the SwAV checkpoint)")
        models.add_choice("efficientnet_lite0", label="EfficientNet-Lite0 (ImageNet, offline)")
        models.add_choice("zoo", label="A FiftyOne zoo model")
        inputs.enum("model", models.values(), default=BUILTIN_MODELS[0], view=models,
                    label="Model", required=True,
                    description="The network whose features become the embeddings")
        model = ctx.params.get("model", BUILTIN_MODELS[0])
        if model == "zoo":
            zoo = _zoo_embedding_models()
            inputs.enum("zoo_model", zoo, required=True, label="Zoo model",
                        description="FiftyOne zoo models that produce embeddings (downloaded "
                                    "on first use)",
                        view=types.AutocompleteView(
                            choices=[types.Choice(m, label=m) for m in zoo]))
        if model == "swav_resnet50":
            inputs.str(
                "checkpoint_path", label="SwAV checkpoint (optional)",
                description="Local swav_800ep_pretrain.pth.tar; default: torch.hub cache")
            if not ctx.params.get("checkpoint_path"):
                _warn_swav_download(inputs)
        default_field = "swav_embedding" if model == "swav_resnet50" else f"{model}_embedding"
        field = inputs.str("embeddings_field", label="Embeddings field", required=True,
                           default=default_field,
                           description="A new vector field that receives the embeddings")
        name = ctx.params.get("embeddings_field", default_field)
        if name:
            try:
                validation.check_new_field(ctx.dataset, name, fo.VectorField, "embeddings field")
            except ValueError as e:
                common.mark_invalid(field, str(e))
        batch = inputs.int("batch_size", label="Batch size", default=32, required=True,
                           description="Images per forward pass (lower it if memory runs out)")
        if not isinstance(ctx.params.get("batch_size", 32), int) or ctx.params.get("batch_size", 32) < 1:
            common.mark_invalid(batch, "Batch size must be a positive integer")
        inputs.bool("skip_existing", label="Skip samples that already have embeddings",
                    default=True,
                    description="Resume an interrupted run instead of recomputing everything")
        common.schedule_hint(ctx, inputs)
        return common.form(inputs, "Compute embeddings")

    def execute(self, ctx):
        from fiftyone_prune.sdk.embeddings import compute_embeddings

        p = ctx.params
        model = p.get("zoo_model") if p.get("model") == "zoo" else p.get("model", "swav_resnet50")
        view = common.target_view(ctx)

        def work(progress):
            progress.stage(f"Embedding: loading {model}")
            return compute_embeddings(
                view,
                model=model,
                embeddings_field=p.get("embeddings_field", "swav_embedding"),
                batch_size=p.get("batch_size", 32),
                # worker processes can't be forked safely inside the App server
                num_workers=None if ctx.delegated else 0,
                skip_existing=p.get("skip_existing", True),
                checkpoint_path=p.get("checkpoint_path") or None,
                progress=progress.bar("Embedding {done}/{total} images"),
            ).to_dict()

        return common.execute_with_progress(self, ctx, work, after=_reload)

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("num_embedded", label="Embedded")
        outputs.int("num_skipped_existing", label="Already had embeddings")
        outputs.int("num_failed", label="Unreadable images")
        return types.Property(outputs, view=types.View(label="Embeddings computed"))

    def __call__(self, sample_collection, model="swav_resnet50",
                 embeddings_field="swav_embedding", batch_size=32, skip_existing=True,
                 checkpoint_path=None, delegate=False):
        params = dict(model=model, embeddings_field=embeddings_field,
                      batch_size=batch_size, skip_existing=skip_existing,
                      checkpoint_path=checkpoint_path)
        if model not in ("swav_resnet50", "efficientnet_lite0"):
            params.update(model="zoo", zoo_model=model)
        return common.call_operator(self.uri, sample_collection, params, delegate)


def _zoo_embedding_models():
    import fiftyone.zoo as foz

    return sorted(foz.list_zoo_models(tags="embeddings"))


def _warn_swav_download(inputs):
    """Says so when SwAV's checkpoint is not on this machine: it is downloaded (about
    100 MB) on Execute, which fails offline."""
    import os

    from fiftyone_prune.core.models import swav_cache_path

    cached = swav_cache_path()
    if not os.path.exists(cached):
        inputs.view("swav_download", types.Warning(label=(
            f"The SwAV checkpoint is not on this machine ({cached}): Execute downloads it "
            f"(about 100 MB) from dl.fbaipublicfiles.com. Offline, give a local checkpoint "
            f"above or choose EfficientNet-Lite0")))


def parse_num_clusters(text):
    """'' -> None, '50' -> 50, '10, 100' -> [10, 100]; ValueError otherwise."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if isinstance(text, (int, list)):
        return text
    parts = [p for p in str(text).replace(";", ",").split(",") if p.strip()]
    try:
        ks = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"k must be an integer or comma-separated integers, got {text!r}")
    return ks[0] if len(ks) == 1 else ks


class ComputePrototypeScores(foo.Operator):
    @property
    def config(self):
        return common.operator_config(
            name="compute_prototype_scores",
            label="Prune: compute prototype scores",
            description=(
                "Score every sample by its cosine distance to k-means prototypes "
                "(label-free) or to its class prototype"
            ),
            icon="/assets/score.svg",
        )

    def resolve_execution_options(self, ctx):
        return common.execution_options(ctx, always_delegate_above=100_000)

    def resolve_input(self, ctx):
        from fiftyone_prune.sdk.scores import _check_inputs

        inputs = types.Object()
        common.add_view_target(ctx, inputs)
        vector_fields = validation.vector_fields(ctx.dataset)
        if not vector_fields:
            common.error_notice(
                inputs, "no_vectors",
                "This dataset has no embeddings yet: run 'Prune: compute embeddings' first",
            )
            return common.form(inputs, "Compute prototype scores")
        choices = types.Dropdown()
        for f in vector_fields:
            choices.add_choice(f, label=f)
        inputs.enum("embeddings_field", choices.values(), default=vector_fields[0],
                    required=True, label="Embeddings field", view=choices,
                    description="The vector field to score (from 'Prune: compute embeddings')")
        label_fields = validation.classification_fields(ctx.dataset)
        methods = types.RadioGroup()
        methods.add_choice("kmeans", label="Self-supervised prototypes (k-means, label-free)")
        if label_fields:
            methods.add_choice("supervised", label="Class prototypes (needs a label field)")
        inputs.enum("method", methods.values(), default="kmeans", view=methods, label="Method",
                    description="Where the prototypes come from: k-means clusters of the "
                                "embeddings, or the mean embedding of each class")
        method = ctx.params.get("method", "kmeans")
        if label_fields:
            labels = types.Dropdown()
            for f in label_fields:
                labels.add_choice(f, label=f)
            inputs.enum("label_field", labels.values(), required=method == "supervised",
                        label="Label field" + ("" if method == "supervised" else " (optional: k = number of classes)"),
                        view=labels,
                        description="A Classification field; its classes are the prototypes "
                                    "(class method) or set k (k-means)")
        k_prop = None
        if method == "kmeans":
            k_prop = inputs.str(
                "num_clusters", label="Number of prototypes k (optional)",
                description="Empty: the number of classes of the label field when one is "
                            "chosen, else round(sqrt(n/2)). Several "
                            "comma-separated values (e.g. 10,100) are combined by mean rank.",
            )
        # a taken default would open the form invalid: propose the next free key
        default_key = common.free_key(ctx.dataset, "prototypes")
        key_prop = inputs.str("run_key", default=default_key, required=True, label="Run key",
                              description="Fields <key>_distance and <key>_cluster are written")
        inputs.bool("overwrite", default=False, label="Replace an existing run",
                    description="Replace the run with this key and its fields")
        p = ctx.params
        try:
            ks = parse_num_clusters(p.get("num_clusters")) if method == "kmeans" else None
        except ValueError as e:
            common.mark_invalid(k_prop, str(e))
            ks = None
        try:
            _check_inputs(common.target_view(ctx), p.get("embeddings_field", vector_fields[0]),
                          p.get("run_key", default_key), method, ks, p.get("label_field"),
                          bool(p.get("overwrite", False)), 25, 256)
            if isinstance(ks, int) and ks > len(common.target_view(ctx)):
                raise ValueError(f"k={ks} exceeds the number of samples in the view")
        except ValueError as e:
            target = key_prop if "run key" in str(e).lower() or "Run key" in str(e) else None
            if target is not None:
                common.mark_invalid(target, common.app_words(str(e)))
            else:
                common.error_notice(inputs, "input_error", common.app_words(str(e)))
        common.schedule_hint(ctx, inputs, above=50_000)
        return common.form(inputs, "Compute prototype scores")

    def execute(self, ctx):
        from fiftyone_prune.sdk.scores import compute_prototype_scores

        p = ctx.params
        method = p.get("method", "kmeans")
        view = common.target_view(ctx)

        def work(progress):
            # reading the vectors and k-means report nothing until the writes start
            progress.stage("Scoring: reading embeddings, "
                           + ("k-means" if method == "kmeans" else "class prototypes"))
            return compute_prototype_scores(
                view,
                embeddings_field=p["embeddings_field"],
                run_key=p.get("run_key", "prototypes"),
                method=method,
                num_clusters=parse_num_clusters(p.get("num_clusters")) if method == "kmeans" else None,
                label_field=p.get("label_field") or None,
                overwrite=bool(p.get("overwrite", False)),
                progress=progress.bar("Scoring: writing {done}/{total} scores"),
            ).to_dict()

        return common.execute_with_progress(self, ctx, work, after=_reload)

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("distance_field", label="Distance field")
        outputs.str("cluster_field", label="Cluster field")
        outputs.int("num_scored", label="Scored")
        outputs.int("num_skipped", label="Skipped (no embedding)")
        return types.Property(outputs, view=types.View(label="Prototype scores computed"))

    def __call__(self, sample_collection, embeddings_field, run_key="prototypes",
                 method="kmeans", num_clusters=None, label_field=None, overwrite=False,
                 delegate=False):
        if isinstance(num_clusters, (list, tuple)):
            num_clusters = ",".join(str(k) for k in num_clusters)
        elif num_clusters is not None:
            num_clusters = str(num_clusters)
        params = dict(embeddings_field=embeddings_field, run_key=run_key, method=method,
                      num_clusters=num_clusters, label_field=label_field, overwrite=overwrite)
        return common.call_operator(self.uri, sample_collection, params, delegate)


#: views larger than this get no live preview in the select form (it reads every score)
PREVIEW_LIMIT = 200_000


def parse_keep(value):
    """The form's number: a fraction in (0, 1], or a whole number > 1 meaning a count."""
    if value is None:
        return 0.8
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value  # the SDK check explains it
    if isinstance(value, (int, float)) and value > 1 and float(value).is_integer():
        return int(value)
    return value


def _dropdown(inputs, name, options, label, default=None, required=True, description=None):
    view = types.Dropdown()
    for value, text in options:
        view.add_choice(value, label=text)
    return inputs.enum(name, view.values(), default=default, required=required, label=label,
                       description=description, view=view)


def _selection_kwargs(params):
    balance = params.get("balance", "cluster")
    eps = params.get("dedup_eps")
    return dict(
        run_key=params.get("run_key"),
        keep=parse_keep(params.get("keep", 0.8)),
        strategy=params.get("strategy", "auto"),
        balance=None if balance == "none" else balance,
        label_field=params.get("label_field") or None,
        balance_ratio=params.get("balance_ratio", 0.5),
        seed=params.get("seed", 51),
        dedup_eps=eps if eps not in (None, "", 0) else None,
        name=params.get("name") or None,
    )


def _preview_markdown(plan):
    lines = [f"**Strategy:** `{plan.strategy}` ({plan.strategy_reason})",
             f"**Keeps {len(plan.kept_ids)}**, prunes {len(plan.pruned_ids)}"
             + (f", {len(plan.unscored_ids)} unscored" if plan.unscored_ids else "")
             + (f", {len(plan.duplicate_ids)} duplicates" if plan.duplicate_ids else ""),
             "", "| group | kept | total |", "|---|---|---|"]
    for group, c in list(plan.groups.items())[:50]:
        lines.append(f"| {group} | {c['kept']} | {c['total']} |")
    if len(plan.groups) > 50:
        lines.append(f"| ... {len(plan.groups) - 50} more | | |")
    return "\n".join(lines)


def _offer_quick_evaluation(inputs, view, plan, kwargs):
    from fiftyone_prune.sdk.evaluation import quick_evaluation_offer

    kept = len(plan.kept_ids)
    offer = quick_evaluation_offer(view, kwargs["run_key"],
                                   kept / max(1, kept + len(plan.pruned_ids)),
                                   kwargs["balance"], kwargs["label_field"])
    if offer:
        inputs.view("quick_evaluation", types.Notice(label=(
            f"{offer['message']}: run 'Prune: evaluate pruning against random' with "
            f"fractions {offer['kwargs']['fractions'][0]} first; auto then follows it")))


class SelectSamples(foo.Operator):
    @property
    def config(self):
        return common.operator_config(
            name="select_samples",
            label="Prune: select samples to keep",
            description=(
                "Choose what to keep from prototype scores (hard/easy/auto/CCS/density/"
                "random, class or cluster balance, SemDeDup); tags and a saved view, "
                "nothing deleted"
            ),
            icon="/assets/select.svg",
        )

    def resolve_input(self, ctx):
        from fiftyone_prune.sdk import runs
        from fiftyone_prune.sdk.selection import plan_selection, STRATEGIES

        inputs = types.Object()
        common.add_view_target(ctx, inputs)
        score_runs = common.runs_newest_first(ctx.dataset, "prototypes")
        if not score_runs:
            common.error_notice(inputs, "no_runs", "No prototype scores yet: run 'Prune: "
                                "compute prototype scores' first")
            return common.form(inputs, "Select samples")
        view = common.target_view(ctx)
        default_run = common.default_scoring_run(view, score_runs)
        _dropdown(inputs, "run_key", [(k, k) for k in score_runs], "Scoring run",
                  default=default_run,
                  description="The prototype scores to select by (default: the most recent "
                              "run that scored these samples)")
        keep = inputs.float("keep", default=0.8, required=True, label="Keep",
                            description="A fraction in (0, 1] (0.8 = keep 80%) or a count (e.g. 5000)")
        _dropdown(inputs, "strategy", [
            ("auto", "auto: what an evaluation of this data found best, else random"),
            ("hard", "hard: keep the least prototypical (abundant data)"),
            ("easy", "easy: keep the most prototypical (scarce data)"),
            ("ccs", "ccs: coverage-centric (robust at high pruning)"),
            ("density", "density: per-cluster budgets (DBP)"),
            ("random", "random: the baseline"),
        ], "Strategy", default="auto",
            description="Which samples of each group are kept")
        label_fields = validation.classification_fields(ctx.dataset)
        balance_opts = [("cluster", "per cluster"), ("none", "none")]
        if label_fields:
            balance_opts.insert(1, ("class", "per class"))
        _dropdown(inputs, "balance", balance_opts, "Balance", default="cluster",
                  description="Each group keeps at least balance_ratio of its fair share")
        if ctx.params.get("balance") == "class":
            _dropdown(inputs, "label_field", [(f, f) for f in label_fields], "Label field",
                      default=label_fields[0],
                      description="The Classification field whose classes are balanced")
        inputs.float("balance_ratio", default=0.5, label="Balance ratio", required=True,
                     description="The floor of each group, as a fraction of its fair share "
                                 "(kept / number of groups); 0 disables floors")
        inputs.float("dedup_eps", label="SemDeDup eps (optional)",
                     description="Remove near-duplicates first: cosine similarity > 1 - eps "
                                 "inside a cluster (e.g. 0.05)")
        inputs.int("seed", default=51, label="Seed",
                   description="For the random choices (random, ccs, ties)")
        run_key = ctx.params.get("run_key") or default_run
        name_prop = inputs.str(
            "name", label="Selection name (optional)",
            description=f"Tags <name>:kept / <name>:pruned and saved view <name>-kept; "
                        f"default: the run key ({run_key})")
        inputs.bool("overwrite", default=False, label="Replace an existing run",
                    description="Replace the tags and saved view of a selection with this name")
        name = ctx.params.get("name") or run_key
        name_taken = common.selection_exists(ctx.dataset, name) and not ctx.params.get("overwrite")
        if name_taken:
            common.mark_invalid(name_prop, common.replace_refused(name))
        # the preview comes last: it depends on every input above
        kwargs = _selection_kwargs(dict(ctx.params, run_key=run_key))
        try:
            if len(view) > PREVIEW_LIMIT:
                from fiftyone_prune.sdk.selection import _check

                _check(view, kwargs["run_key"], kwargs["keep"], kwargs["strategy"],
                       kwargs["balance"], kwargs["label_field"], kwargs["balance_ratio"],
                       kwargs["dedup_eps"], kwargs["name"])
                inputs.view("preview", types.Notice(
                    label=f"Preview skipped for views over {PREVIEW_LIMIT:,} samples"))
            elif kwargs["dedup_eps"] is None:
                plan = plan_selection(view, **kwargs)
                inputs.md(f"**Preview** on {len(view)} samples\n\n" + _preview_markdown(plan),
                          name="preview")
                if kwargs["strategy"] == "auto":
                    _offer_quick_evaluation(inputs, view, plan, kwargs)
            else:
                inputs.view("preview", types.Notice(
                    label="Preview without SemDeDup counts (deduplication runs on Execute)"))
                plan = plan_selection(view, **dict(kwargs, dedup_eps=None))
                inputs.md(_preview_markdown(plan), name="preview_table")
        except ValueError as e:
            if "keep" in str(e):
                common.mark_invalid(keep, str(e))
            else:
                common.error_notice(inputs, "input_error", common.app_words(str(e)))
        return common.form(inputs, "Select samples")

    def execute(self, ctx):
        from fiftyone_prune.sdk.selection import plan_selection, apply_plan, selection_names

        view = common.target_view(ctx)
        name = ctx.params.get("name") or ctx.params.get("run_key")
        if name and common.selection_exists(view, name) and not ctx.params.get("overwrite"):
            raise ValueError(common.replace_refused(name))

        def work(progress):
            progress.stage("Selecting: reading scores")
            plan = plan_selection(view, **_selection_kwargs(ctx.params))
            progress.stage(f"Selecting: tagging {len(plan.kept_ids)} kept and "
                           f"{len(plan.pruned_ids)} pruned samples")
            apply_plan(view, plan)
            return plan.summary()

        def after(ctx, summary):
            # the App's set_view(name=...) only finds saved views it had loaded before
            # this run (FiftyOne's own save_view operator has the same "@todo"): pass the
            # view itself and say its saved name
            name = selection_names(summary["name"])["view"]
            kept = view._dataset.load_saved_view(name)
            return [ctx.ops.reload_dataset(), ctx.ops.set_view(view=kept),
                    ctx.ops.notify(f"Showing the kept samples: saved view '{name}' "
                                   f"(in the saved views menu)", variant="success")]

        return common.execute_with_progress(self, ctx, work, after=after)

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("strategy", label="Strategy used")
        outputs.str("strategy_reason", label="Why")
        outputs.int("num_kept", label="Kept")
        outputs.int("num_pruned", label="Pruned")
        return types.Property(outputs, view=types.View(label="Selection applied"))

    def __call__(self, sample_collection, run_key="prototypes", keep=0.8, strategy="auto",
                 balance="cluster", label_field=None, balance_ratio=0.5, seed=51,
                 dedup_eps=None, name=None, overwrite=False, delegate=False):
        params = dict(run_key=run_key, keep=keep, strategy=strategy,
                      balance="none" if balance is None else balance, label_field=label_field,
                      balance_ratio=balance_ratio, seed=seed, dedup_eps=dedup_eps, name=name,
                      overwrite=overwrite)
        return common.call_operator(self.uri, sample_collection, params, delegate)


class ExportKeptSamples(foo.Operator):
    @property
    def config(self):
        return common.operator_config(
            name="export_kept_samples",
            label="Prune: export kept samples",
            description="Export the kept subset in any FiftyOne format, with a manifest",
            icon="/assets/export.svg",
        )

    def resolve_execution_options(self, ctx):
        return common.execution_options(ctx, always_delegate_above=5000)

    def resolve_input(self, ctx):
        from fiftyone_prune.sdk.export import DATASET_TYPES, check_export_dir

        inputs = types.Object()
        selections = common.selections_newest_first(ctx.dataset)
        choices = [(name, f"{name}: its kept samples") for name, _ in selections]
        choices.append((_EXPORT_VIEW, "The samples chosen below, as they are"))
        _dropdown(inputs, "selection", choices, "What to export",
                  default=choices[0][0], required=False,
                  description="A selection's kept samples (default: the most recent "
                              "selection), or a view of your own")
        selection = ctx.params.get("selection") or choices[0][0]
        if selection == _EXPORT_VIEW:
            common.add_view_target(ctx, inputs)
        view = _export_view(ctx, selection)
        if selection == _EXPORT_VIEW:
            for warning in _pruned_warnings(view, selections):
                inputs.view(f"pruned_{len(inputs.properties)}", types.Warning(label=warning))
        inputs.md(f"Exports **{len(view)}** samples", name="count")
        _dropdown(inputs, "dataset_type", [(k, k) for k in DATASET_TYPES], "Format",
                  default="fiftyone",
                  description="fiftyone keeps every field and score; the others are the "
                              "usual FiftyOne export formats")
        dtype = ctx.params.get("dataset_type", "fiftyone")
        needs_labels = dtype in ("image_classification_tree", "image_classification_csv",
                                 "coco", "yolo", "voc")
        label_fields = sorted(ctx.dataset.get_field_schema(embedded_doc_type=fo.Label))
        if needs_labels or label_fields:
            _dropdown(inputs, "label_field", [(f, f) for f in label_fields], "Label field",
                      required=needs_labels,
                      default=_default_label_field(ctx.dataset, selections, selection,
                                                   label_fields),
                      description="The labels written by label formats")
        out = inputs.file("export_dir", required=True, label="Export directory",
                          description="A new or empty folder outside the dataset's media "
                                      "folders (type a path or choose one)",
                          view=types.FileExplorerView(choose_dir=True,
                                                      button_label="Choose a folder..."))
        inputs.bool("overwrite", default=False, label="Replace a previous export",
                    description="Replace a previous fiftyone-prune export in this folder "
                                "(anything else is never deleted)")
        export_dir = _path_param(ctx.params.get("export_dir"))
        if export_dir:
            try:
                check_export_dir(view, export_dir, bool(ctx.params.get("overwrite", False)))
            except ValueError as e:
                common.mark_invalid(out, _app_words(str(e)))
        return common.form(inputs, "Export kept samples")

    def execute(self, ctx):
        from fiftyone_prune.sdk.export import export_kept_samples

        export_dir = _path_param(ctx.params.get("export_dir"))
        selection = ctx.params.get("selection") or _EXPORT_VIEW
        view = _export_view(ctx, selection)
        dataset_type = ctx.params.get("dataset_type", "fiftyone")

        def work(progress):
            progress.stage(f"Exporting {len(view)} samples ({dataset_type})")
            return export_kept_samples(
                view, export_dir, dataset_type=dataset_type,
                label_field=ctx.params.get("label_field") or None,
                overwrite=bool(ctx.params.get("overwrite", False)),
                selection=None if selection == _EXPORT_VIEW else selection,
                progress=progress.bar(f"Exporting {{done}}/{{total}} samples ({dataset_type})"),
            )

        return common.execute_with_progress(self, ctx, work)

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("export_dir", label="Exported to")
        outputs.int("num_samples", label="Samples")
        outputs.str("manifest", label="Manifest")
        return types.Property(outputs, view=types.View(label="Export complete"))

    def __call__(self, sample_collection, export_dir, dataset_type="fiftyone",
                 label_field=None, overwrite=False, selection=None, delegate=False):
        """Exports ``sample_collection`` as it is, or with ``selection`` (a name) that
        selection's kept samples."""
        # what the App's file input sends
        params = dict(export_dir={"absolute_path": str(export_dir)},
                      dataset_type=dataset_type, label_field=label_field,
                      overwrite=overwrite, selection=selection or _EXPORT_VIEW)
        return common.call_operator(self.uri, sample_collection, params, delegate)


#: the export form's choice "the samples chosen below" (not a selection name)
_EXPORT_VIEW = "__view__"


def _path_param(value):
    """A file input's value: ``{"absolute_path": ...}`` from the App, a string from Python."""
    if isinstance(value, dict):
        value = value.get("absolute_path") or value.get("path")
    return value or None


def _app_words(message: str) -> str:
    return common.app_words(message, tick="Replace a previous export")


def _export_view(ctx, selection):
    """What the export form exports: a selection's saved kept view, or the target view."""
    from fiftyone_prune.sdk.selection import selection_names

    if selection == _EXPORT_VIEW:
        return common.target_view(ctx)
    names = selection_names(selection)
    if names["view"] in ctx.dataset.list_saved_views():
        return ctx.dataset.load_saved_view(names["view"])
    return ctx.dataset.match_tags(names["kept_tag"])


def _pruned_warnings(view, selections):
    from fiftyone_prune.sdk.selection import selection_names

    warnings = []
    for name, _ in selections:
        n = len(view.match_tags(selection_names(name)["pruned_tag"]))
        if n:
            warnings.append(f"These samples include {n} that selection {name!r} pruned: "
                            f"choose '{name}: its kept samples' above to export only what "
                            f"it kept")
    return warnings


def _default_label_field(dataset, selections, selection, label_fields):
    """The chosen selection's scoring label field, else the first classification field."""
    from fiftyone_prune.sdk import runs

    for name, cfg in selections:
        if name == selection:
            try:
                label = runs.get_run_info(dataset, cfg.run_key).config.label_field
            except Exception:  # its scoring run was deleted
                label = None
            if label in label_fields:
                return label
    classification = validation.classification_fields(dataset)
    return (classification or label_fields or [None])[0]


class EvaluatePruning(foo.Operator):
    @property
    def config(self):
        return common.operator_config(
            name="evaluate_pruning",
            label="Prune: evaluate pruning against random",
            description=(
                "Train a probe on each selection and compare held-out accuracy with "
                "random selection and with all data"
            ),
            icon="/assets/evaluate.svg",
            default_choice_to_delegated=True,
        )

    def resolve_input(self, ctx):
        from fiftyone_prune.sdk import runs
        from fiftyone_prune.sdk.evaluation import _check, EVAL_STRATEGIES

        inputs = types.Object()
        common.add_view_target(ctx, inputs)
        score_runs = common.runs_newest_first(ctx.dataset, "prototypes")
        label_fields = validation.classification_fields(ctx.dataset)
        if not score_runs or not label_fields:
            common.error_notice(inputs, "missing", "Needs a prototype-score run and a "
                                "Classification label field: run 'Prune: compute prototype "
                                "scores' first" if not score_runs else
                                "Needs a Classification label field to train the probe")
            return common.form(inputs, "Evaluate pruning")
        default_run = common.default_scoring_run(common.target_view(ctx), score_runs)
        _dropdown(inputs, "run_key", [(k, k) for k in score_runs], "Scoring run",
                  default=default_run,
                  description="The prototype scores whose selections are evaluated "
                              "(default: the most recent run that scored these samples)")
        _dropdown(inputs, "label_field", [(f, f) for f in label_fields], "Label field",
                  default=label_fields[0],
                  description="Classification labels the probe learns and is tested on")
        fr = inputs.str("fractions", default="0.1,0.2,0.3,0.5,0.7,0.9", label="Kept fractions",
                        description="Comma-separated fractions in (0, 1] at which each strategy "
                                    "is compared with random")
        inputs.list("strategies", types.String(), default=["random", "easy", "hard", "ccs"],
                    label="Strategies (random is always included)",
                    description="Strategies compared with random at every fraction",
                    view=types.AutocompleteView(
                        choices=[types.Choice(s, label=s) for s in EVAL_STRATEGIES]))
        inputs.int("seeds", default=3, label="Seeds per point",
                   description="Probes trained per strategy and fraction (their spread is "
                               "part of the intervals)")
        _dropdown(inputs, "probe", [("linear", "linear probe on embeddings (fast)"),
                                    ("cnn", "small CNN from scratch on images (slow)")],
                  "Probe", default="linear",
                  description="The model trained on each selection to measure its accuracy")
        inputs.str("eval_key", label="Run key (optional)",
                   description="Names the evaluation run (default: <scoring run>_evaluation)")
        inputs.bool("overwrite", default=False, label="Replace an existing run",
                    description="Replace an evaluation with the same run key")
        p = ctx.params
        try:
            fractions = _parse_fractions(p.get("fractions", "0.1,0.2,0.3,0.5,0.7,0.9"))
            run_key = p.get("run_key", default_run)
            _check(common.target_view(ctx), p.get("label_field", label_fields[0]), run_key,
                   fractions, p.get("strategies") or ["random"], p.get("seeds", 3),
                   p.get("probe", "linear"), None, 0.2,
                   p.get("eval_key") or f"{run_key}_evaluation", bool(p.get("overwrite")))
        except ValueError as e:
            if "fraction" in str(e):
                common.mark_invalid(fr, str(e))
            else:
                common.error_notice(inputs, "input_error", common.app_words(str(e)))
        common.schedule_hint(ctx, inputs, above=0)
        return common.form(inputs, "Evaluate pruning")

    def execute(self, ctx):
        from fiftyone_prune.sdk.evaluation import evaluate_pruning

        p = ctx.params
        view = common.target_view(ctx)

        def work(progress):
            progress.stage("Evaluating: reading embeddings and scores")
            result = evaluate_pruning(
                view, label_field=p["label_field"], run_key=p["run_key"],
                fractions=_parse_fractions(p.get("fractions", "0.1,0.2,0.3,0.5,0.7,0.9")),
                strategies=p.get("strategies") or ["random"], seeds=p.get("seeds", 3),
                probe=p.get("probe", "linear"), eval_key=p.get("eval_key") or None,
                overwrite=bool(p.get("overwrite", False)),
                progress=progress.bar("Evaluating: training probe {done}/{total}"),
            )
            return {"eval_key": result.eval_key, "verdicts": "\n\n".join(result.verdicts)}

        return common.execute_with_progress(self, ctx, work)

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("eval_key", label="Evaluation run")
        outputs.md(ctx.results.get("verdicts", "") if ctx.results else "", name="verdicts")
        return types.Property(outputs, view=types.View(label="Pruning evaluated"))

    def __call__(self, sample_collection, label_field, run_key="prototypes",
                 fractions=(0.1, 0.2, 0.3, 0.5, 0.7, 0.9), strategies=("random", "easy", "hard", "ccs"),
                 seeds=3, probe="linear", eval_key=None, overwrite=False, delegate=False):
        params = dict(label_field=label_field, run_key=run_key,
                      fractions=",".join(str(f) for f in fractions), strategies=list(strategies),
                      seeds=seeds, probe=probe, eval_key=eval_key, overwrite=overwrite)
        return common.call_operator(self.uri, sample_collection, params, delegate)


def _parse_fractions(text):
    try:
        return [float(f) for f in str(text).split(",") if f.strip()]
    except ValueError:
        raise ValueError(f"fractions must be comma-separated numbers in (0, 1], got {text!r}")


# --- run management: what FiftyOne's brain plugin offers for its runs --------------------

def _run_choice(ctx, inputs, kinds=None, description="The run to act on"):
    """A dropdown of this package's runs (of ``kinds``), the most recent first; returns
    the chosen key, or None (with a notice) when there is none."""
    from fiftyone_prune.sdk import runs

    keys = [k for k in common.runs_newest_first(ctx.dataset, None)
            if kinds is None or runs.get_run_info(ctx.dataset, k).config.kind in kinds]
    if not keys:
        common.error_notice(inputs, "no_runs", "This dataset has no such fiftyone-prune "
                            "run yet: compute prototype scores (and select) first")
        return None
    options = [(k, f"{k} ({runs.get_run_info(ctx.dataset, k).config.kind})") for k in keys]
    _dropdown(inputs, "run_key", options, "Run", default=keys[0], description=description)
    key = ctx.params.get("run_key") or keys[0]
    return key if key in keys else keys[0]


def _code_list(values):
    return ", ".join(f"`{v}`" for v in values) if values else "none"


def run_markdown(summary: dict) -> str:
    """One run's summary as the App shows it."""
    lines = [f"**{summary['run_key']}**: {summary['kind']} run, registered "
             f"{summary['timestamp'] or '?'}", "",
             f"**Status**: {summary['status']}", "",
             "| parameter | value |", "|---|---|"]
    for name, value in sorted(summary["params"].items()):
        text = str(value).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {name} | {text[:120]} |")
    lines += ["", f"**Fields**: {_code_list(summary['fields'])}",
              "", f"**Tags**: {_code_list(summary['tags'])}",
              "", f"**Saved views**: {_code_list(summary['saved_views'])}"]
    if summary["dependents"]:
        lines += ["", f"**Made from it**: {_code_list(summary['dependents'])}"]
    return "\n".join(lines)


class GetRunInfo(foo.Operator):
    @property
    def config(self):
        return common.operator_config(
            name="get_pruning_run_info", label="Prune: run info",
            description="List the pruning runs of this dataset: parameters, status and "
                        "the fields, tags and saved views each created",
            icon="/assets/score.svg", execute_as_generator=False,
            allow_delegated_execution=False)

    def resolve_input(self, ctx):
        from fiftyone_prune.sdk import runs

        inputs = types.Object()
        key = _run_choice(ctx, inputs, description="Scoring, selection and evaluation "
                                                   "runs, the most recent first")
        if key is not None:
            inputs.md(run_markdown(runs.run_summary(ctx.dataset, key)), name="info")
        return common.form(inputs, "Pruning runs")

    def execute(self, ctx):
        from fiftyone_prune.sdk import runs

        return runs.run_summary(ctx.dataset, ctx.params["run_key"])

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.md(run_markdown(ctx.results) if ctx.results else "", name="info")
        return types.Property(outputs, view=types.View(label="Run info"))


#: what "Load a run's samples" can show of a selection
_SELECTION_PARTS = [("kept", "its kept samples (the saved view)"),
                    ("pruned", "its pruned samples"), ("unscored", "its unscored samples")]


class LoadRunView(foo.Operator):
    @property
    def config(self):
        return common.operator_config(
            name="load_pruning_run_view", label="Prune: load a run's samples",
            description="Show a selection's kept (or pruned) samples, or a scoring run's "
                        "samples hardest first",
            icon="/assets/select.svg", execute_as_generator=False,
            allow_delegated_execution=False)

    def resolve_input(self, ctx):
        inputs = types.Object()
        key = _run_choice(ctx, inputs, kinds=("selection", "prototypes"),
                          description="A selection or a scoring run")
        if key is not None and _kind(ctx, key) == "selection":
            _dropdown(inputs, "part", _SELECTION_PARTS, "Show", default="kept",
                      description="Which of the selection's samples the grid shows")
        elif key is not None:
            inputs.md("Shows the samples this run scored, hardest (farthest from their "
                      "prototype) first", name="hint")
        return common.form(inputs, "Load a run's samples")

    def execute(self, ctx):
        from fiftyone_prune.sdk import runs
        from fiftyone_prune.sdk.selection import selection_names

        key = ctx.params["run_key"]
        cfg = runs.get_run_info(ctx.dataset, key).config
        if cfg.kind == "prototypes":
            ctx.ops.set_view(ctx.dataset.exists(cfg.distance_field)
                             .sort_by(cfg.distance_field, reverse=True))
            return
        names = selection_names(cfg.name)
        part = ctx.params.get("part") or "kept"
        if part == "kept" and ctx.dataset.has_saved_view(names["view"]):
            ctx.ops.set_view(name=names["view"])
        else:
            ctx.ops.set_view(ctx.dataset.match_tags(names[f"{part}_tag"]))


def _kind(ctx, key):
    from fiftyone_prune.sdk import runs

    return runs.get_run_info(ctx.dataset, key).config.kind


class RenameRun(foo.Operator):
    @property
    def config(self):
        return common.operator_config(
            name="rename_pruning_run", label="Prune: rename a run",
            description="Give a scoring or evaluation run a new key (its selections and "
                        "evaluations follow it)",
            icon="/assets/score.svg", execute_as_generator=False,
            allow_delegated_execution=False)

    def resolve_input(self, ctx):
        inputs = types.Object()
        key = _run_choice(ctx, inputs, kinds=("prototypes", "evaluation"),
                          description="A scoring or evaluation run (a selection is named "
                                      "by its tags and saved view: select again instead)")
        if key is None:
            return common.form(inputs, "Rename a run")
        new = inputs.str("new_run_key", required=True, label="New run key",
                         description="Letters, digits and underscores; its fields keep "
                                     "their names")
        new_key = ctx.params.get("new_run_key")
        if new_key:
            try:
                validation.check_run_key(new_key)
                if new_key in ctx.dataset.list_runs():
                    raise ValueError(f"Run key {new_key!r} is already used: choose another")
            except ValueError as e:
                common.mark_invalid(new, str(e))
        return common.form(inputs, "Rename a run")

    def execute(self, ctx):
        from fiftyone_prune.sdk import runs

        runs.rename_run(ctx.dataset, ctx.params["run_key"], ctx.params["new_run_key"])
        ctx.ops.notify(f"Run {ctx.params['run_key']!r} is now "
                       f"{ctx.params['new_run_key']!r}", variant="success")


class DeleteRun(foo.Operator):
    @property
    def config(self):
        return common.operator_config(
            name="delete_pruning_run", label="Prune: delete a run",
            description="Delete a run with the fields, tags and saved views it created",
            icon="/assets/score.svg", execute_as_generator=False,
            allow_delegated_execution=False)

    def resolve_input(self, ctx):
        from fiftyone_prune.sdk import runs

        inputs = types.Object()
        key = _run_choice(ctx, inputs, description="The run to delete")
        if key is None:
            return common.form(inputs, "Delete a run")
        summary = runs.run_summary(ctx.dataset, key)
        inputs.view("what", types.Warning(label=(
            f"Deletes run {key!r}, the fields {summary['fields'] or 'none'}, the tags "
            f"{summary['tags'] or 'none'} and the saved views "
            f"{summary['saved_views'] or 'none'}. Samples are never deleted.")))
        if summary["dependents"]:
            inputs.view("stale", types.Notice(label=(
                f"Runs made from it ({', '.join(summary['dependents'])}) stay, and "
                f"become stale")))
        confirm = inputs.bool("confirm", default=False, required=True,
                              label="Yes, delete this run and what it created",
                              description="Nothing is deleted without this tick")
        if not ctx.params.get("confirm"):
            common.mark_invalid(confirm, "Tick to confirm the deletion")
        return common.form(inputs, "Delete a run")

    def execute(self, ctx):
        from fiftyone_prune.sdk import runs

        if not ctx.params.get("confirm"):
            raise ValueError("Not deleted: tick 'Yes, delete this run and what it created'")
        key = ctx.params["run_key"]
        deleted = runs.delete_run(ctx.dataset, key)
        ctx.ops.reload_dataset()
        return {"run_key": key, "deleted_fields": ", ".join(deleted) or "none"}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("run_key", label="Deleted run")
        outputs.str("deleted_fields", label="Deleted fields")
        return types.Property(outputs, view=types.View(label="Run deleted"))


OPERATORS = [ComputeEmbeddings, ComputePrototypeScores, SelectSamples, ExportKeptSamples,
             EvaluatePruning, GetRunInfo, LoadRunView,
             RenameRun, DeleteRun]
