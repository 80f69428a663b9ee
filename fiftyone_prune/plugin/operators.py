"""App operators: each is a thin class over one SDK function. Its form parses the inputs
with :mod:`fiftyone_prune.core.params` (the parsers the CLI and the panel use too),
runs the SDK's own checks, and shows a :class:`~fiftyone_prune.core.params.ParameterError`
under the input it names; ``execute`` calls the SDK function, the long ones showing its
progress while they run (``common.execute_with_progress``)."""

from __future__ import annotations

import contextlib
import os

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_prune.core.params import (
    EVAL_STRATEGIES, ParameterError, SelectionSpec, keep_shortfall,
    parse_fractions, parse_num_clusters, selection_spec_from_inputs,
)
from fiftyone_prune.plugin import common
from fiftyone_prune.sdk import validation

PLUGIN = common.PLUGIN


class _PruneOperator(foo.Operator):
    """What every operator of this plugin declares, from four class attributes.

    A ``QUICK`` operator (run management) answers at once: it is never scheduled and does
    not stream progress; the others may be scheduled and stream their progress."""

    NAME = LABEL = DESCRIPTION = ""
    ICON = "/assets/score.svg"
    QUICK = False
    #: further ``OperatorConfig`` options
    OPTIONS: dict = {}

    @property
    def config(self):
        options = dict(self.OPTIONS)
        if self.QUICK:
            options.update(execute_as_generator=False, allow_delegated_execution=False)
        return common.operator_config(name=self.NAME, label=self.LABEL,
                                      description=self.DESCRIPTION, icon=self.ICON,
                                      **options)

    def resolve_type(self, ctx, type):
        # after a run the App asks for the output's form with the run's result, and
        # shows it whenever the run failed: a failed run has no result, so without
        # this a second dialog titled as a success ("Embeddings computed") would follow
        # the failure, "No value provided" in every field. The failure is shown alone
        # (the streamed "... failed" dialog, or the App's error notice)
        if type == "outputs" and not ctx.results:
            return None
        return super().resolve_type(ctx, type)


def _reload(ctx, result):
    return [ctx.ops.reload_dataset()]


def _whole_number(value):
    """The App's number inputs may send ``3.0`` for 3."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# --- #14: one run split into M delegated tasks ---------------------------------------

def _add_num_shards(ctx, inputs):
    """The "Split into M tasks" input of the embedding and scoring forms; returns M as
    the SDK takes it (None for one run; the SDK's checks judge any other value).

    It is always shown: the App says whether the user chose Execute or Schedule only
    when the button is clicked (``request_delegation`` is sent with the execution, never
    with the form), so a form cannot show it for "Schedule" only. With M > 1 either
    button just queues the M tasks, which is quick."""
    inputs.int(
        "num_shards", default=1, label="Split into M tasks",
        description="1: one run. M > 1: queue M tasks over disjoint slices of these "
                    "samples for `fiftyone delegated launch` workers (any number, on any "
                    "machine sharing this database); the run is usable once all are done")
    num_shards = _whole_number(ctx.params.get("num_shards"))
    if num_shards in (None, 1):
        return None
    if isinstance(num_shards, int) and num_shards > 1:
        inputs.view("shards_hint", types.Notice(label=(
            f"Execute queues {num_shards} tasks and returns: start workers with `fiftyone "
            f"delegated launch` (one per machine or GPU); `fiftyone-prune runs "
            f"{ctx.dataset.name}` shows their progress, and a stale task can be re-queued "
            f"with `fiftyone-prune requeue`")))
    return num_shards


def _queued(status) -> dict:
    """What a sharded call that queued its tasks returns to the App and to Python."""
    queued = [str(i) for i in status["queued_operations"]]
    return {"key": status["key"], "num_shards": status["num_shards"],
            "num_queued": len(queued), "queued_operations": queued,
            "total": status["total"],
            "message": (f"Queued {len(queued)} of {status['num_shards']} tasks of run "
                        f"{status['key']!r} ({status['total']} samples): run them with "
                        f"`fiftyone delegated launch`")}


def _queued_output(ctx):
    """The output of a run that was split into tasks, or None for an ordinary run."""
    results = ctx.results or {}
    if "num_queued" not in results:
        return None
    outputs = types.Object()
    outputs.int("num_queued", label="Tasks queued")
    outputs.str("key", label="Run")
    outputs.md(results.get("message", ""), name="message")
    return types.Property(outputs, view=types.View(label="Tasks queued"))


# --- embeddings ------------------------------------------------------------------------

class ComputeEmbeddings(_PruneOperator):
    NAME = "compute_embeddings"
    LABEL = "Prune: compute embeddings"
    DESCRIPTION = ("Embed images with SwAV ResNet-50 (the data-pruning paper's model) or "
                   "another model and store the vectors as a sample field")
    ICON = "/assets/embed.svg"

    def resolve_execution_options(self, ctx):
        return common.execution_options(ctx)

    def resolve_input(self, ctx):
        from fiftyone_prune.core.models import BUILTIN_MODELS
        from fiftyone_prune.sdk.embeddings import check_embedding_inputs

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
            _warn_zoo_download(inputs, ctx.params.get("zoo_model"))
        if model == "swav_resnet50":
            inputs.str(
                "checkpoint_path", label="SwAV checkpoint (optional)",
                description="Local swav_800ep_pretrain.pth.tar; default: torch.hub cache")
            if not ctx.params.get("checkpoint_path"):
                _warn_swav_download(inputs)
        default_field = "swav_embedding" if model == "swav_resnet50" else f"{model}_embedding"
        # object-level embeddings, as FiftyOne's brain operators offer them
        patch_fields = _patch_fields(ctx.dataset)
        if patch_fields:
            _dropdown(inputs, "patches_field",
                      [(_WHOLE_IMAGES, "None: embed whole images")]
                      + [(f, f"{f}: embed each object's crop") for f in patch_fields],
                      "Patches field", default=_WHOLE_IMAGES, required=False,
                      description="A Detections field: each object's crop is embedded "
                                  "onto its label (<field>.detections.<embeddings field>)")
        inputs.str("embeddings_field", label="Embeddings field", required=True,
                   default=default_field,
                   description="A new vector field that receives the embeddings"
                               + (" (on each object's label with a patches field)"
                                  if patch_fields else ""))
        inputs.int("batch_size", label="Batch size", default=32, required=True,
                   description="Images per forward pass (lower it if memory runs out)")
        inputs.bool("skip_existing", label="Skip samples that already have embeddings",
                    default=True,
                    description="Resume an interrupted run instead of recomputing everything")
        if model != "zoo":
            _dropdown(inputs, "precision",
                      [("fp32", "fp32 (exact; the default)"),
                       ("fp16", "fp16 (CUDA GPUs only; faster, approximate)"),
                       ("bf16", "bf16 (CPU or recent GPUs; faster, approximate)")],
                      "Precision", default="fp32", required=False,
                      description="Arithmetic of the forward pass; recorded with the field, "
                                  "so a resume must use the same")
        num_shards = _add_num_shards(ctx, inputs)
        if ctx.params.get("embeddings_field", default_field):
            try:  # the SDK's own checks, as execute will call it
                check_embedding_inputs(common.target_view(ctx),
                                       **_embedding_kwargs(ctx.params, default_field),
                                       num_shards=num_shards, delegate=num_shards is not None)
            except ValueError as e:
                common.show_error(inputs, e)
        common.schedule_hint(ctx, inputs)
        return common.form(ctx, inputs, "Compute embeddings")

    def execute(self, ctx):
        from fiftyone_prune.sdk.embeddings import compute_embeddings

        p = ctx.params
        view = common.target_view(ctx)
        num_shards = _whole_number(p.get("num_shards") or 1)
        kwargs = _embedding_kwargs(p, "swav_embedding")
        model = kwargs["model"]

        def work(progress):
            if num_shards > 1:
                progress.stage(f"Embedding: queueing {num_shards} tasks")
                # the tasks run in `fiftyone delegated launch` workers, which may fork
                return _queued(compute_embeddings(view, num_shards=num_shards,
                                                  delegate=True, **kwargs))
            progress.stage(f"Embedding: loading {model}")
            with _offline_download_message(model, kwargs.get("checkpoint_path")):
                return compute_embeddings(
                    view, **kwargs,
                    # worker processes can't be forked safely inside the App server
                    num_workers=None if ctx.delegated else 0,
                    skip_existing=bool(p.get("skip_existing", True)),
                    progress=progress.bar("Embedding {done}/{total} images"),
                ).to_dict()

        return common.execute_with_progress(self, ctx, work, after=_reload)

    def resolve_output(self, ctx):
        queued = _queued_output(ctx)
        if queued is not None:
            return queued
        outputs = types.Object()
        outputs.int("num_embedded", label="Embedded")
        outputs.int("num_skipped_existing", label="Already had embeddings")
        outputs.int("num_failed", label="Unreadable images")
        return types.Property(outputs, view=types.View(label="Embeddings computed"))

    def __call__(self, sample_collection, model="swav_resnet50",
                 embeddings_field="swav_embedding", batch_size=32, skip_existing=True,
                 checkpoint_path=None, num_shards=1, delegate=False, precision="fp32",
                 patches_field=None):
        """Embeds the images of ``sample_collection``, as the App's form does
        (:func:`fiftyone_prune.compute_embeddings`).

        Example usage::

            import fiftyone.operators as foo
            import fiftyone_prune as fop

            dataset = fop.load_demo_dataset("prune-demo", max_samples=50)
            compute_embeddings = foo.get_operator("@fiftyone-prune/prune/compute_embeddings")
            compute_embeddings(dataset, model="efficientnet_lite0", embeddings_field="emb")

            # or schedule it for `fiftyone delegated launch`
            compute_embeddings(dataset, model="efficientnet_lite0", embeddings_field="emb",
                               delegate=True)

        Args:
            sample_collection: a dataset or view of images
            model ("swav_resnet50"): ``"swav_resnet50"``, ``"efficientnet_lite0"`` or the
                name of a FiftyOne zoo model that produces embeddings
            embeddings_field ("swav_embedding"): the vector field to write
            batch_size (32): images per forward pass
            skip_existing (True): embed only samples without a vector (resume)
            checkpoint_path (None): a local SwAV checkpoint
            num_shards (1): with M > 1, queue M tasks over disjoint slices of the view
                for ``fiftyone delegated launch`` workers instead of embedding here
            delegate (False): schedule the operation instead of running it now
            precision ("fp32"): ``"fp32"``, ``"fp16"`` (CUDA) or ``"bf16"`` (built-in
                models only)
            patches_field (None): a Detection(s) field: embed each object's crop onto
                its label instead of the whole images

        Returns:
            the :class:`fiftyone_prune.sdk.embeddings.EmbeddingResult` as a dict; with
            ``num_shards`` > 1 the queued tasks (``num_queued``, ``queued_operations``);
            with ``delegate=True`` the queued operation
        """
        params = dict(model=model, embeddings_field=embeddings_field,
                      batch_size=batch_size, skip_existing=skip_existing,
                      checkpoint_path=checkpoint_path, num_shards=num_shards,
                      precision=precision, patches_field=patches_field or _WHOLE_IMAGES)
        if model not in ("swav_resnet50", "efficientnet_lite0"):
            params.update(model="zoo", zoo_model=model)
        return common.call_operator(self.uri, sample_collection, params, delegate)


#: the "Patches field" choice for embedding whole images
_WHOLE_IMAGES = "__images__"


def _patch_fields(dataset) -> list[str]:
    """The dataset's Detection and Detections fields: what can be embedded per object."""
    return sorted(dataset.get_field_schema(embedded_doc_type=fo.Detections)) + sorted(
        dataset.get_field_schema(embedded_doc_type=fo.Detection))


def _embedding_kwargs(params, default_field) -> dict:
    """The embeddings form's values as ``compute_embeddings`` takes them."""
    model = params.get("model") or "swav_resnet50"
    patches = params.get("patches_field")
    return dict(patches_field=None if patches in (None, "", _WHOLE_IMAGES) else patches,
                model=params.get("zoo_model") if model == "zoo" else model,
                embeddings_field=params.get("embeddings_field") or default_field,
                batch_size=_whole_number(params.get("batch_size", 32)),
                checkpoint_path=params.get("checkpoint_path") or None,
                precision="fp32" if model == "zoo" else params.get("precision") or "fp32")


def _zoo_embedding_models():
    import fiftyone.zoo as foz

    return sorted(foz.list_zoo_models(tags="embeddings"))


def _zoo_model_downloaded(name) -> bool:
    import fiftyone.zoo.models as fozm

    try:
        return bool(fozm.is_zoo_model_downloaded(name))
    except Exception:  # noqa: BLE001 - an unknown name: the SDK's check names it
        return True


def _warn_zoo_download(inputs, name):
    """What SwAV's warning says, for a zoo model: downloaded on Execute unless it is on
    this machine already, which fails offline."""
    if name and _zoo_model_downloaded(name):
        return
    which = f"{name!r} is not on this machine" if name else "Zoo models not on this machine"
    inputs.view("zoo_download", types.Warning(label=(
        f"{which}: Execute downloads {'it' if name else 'them'} first (often hundreds of MB) "
        f"from the model's source. Offline, choose EfficientNet-Lite0 or a zoo model "
        f"downloaded before")))


#: what a download that found no network raises (requests' ConnectionError and
#: urllib's URLError are OSErrors too)
_NETWORK_ERRORS = (ConnectionError, TimeoutError, OSError)


@contextlib.contextmanager
def _offline_download_message(model, checkpoint_path):
    """A model download that fails for want of a network, as one line that says so and
    what to do, instead of the library's raw ConnectionError."""
    import os

    from fiftyone_prune.core.models import swav_cache_path

    if model == "swav_resnet50":
        needs_download = not checkpoint_path and not os.path.exists(swav_cache_path())
    elif model == "efficientnet_lite0" or not isinstance(model, str):
        needs_download = False
    else:
        needs_download = not _zoo_model_downloaded(model)
    try:
        yield
    except _NETWORK_ERRORS as e:
        if not needs_download or isinstance(e, FileNotFoundError):
            raise
        raise RuntimeError(
            f"Could not download model {model!r}: this machine seems to be offline "
            f"({type(e).__name__}: {str(e)[:200]}). Connect it to the internet once, or "
            f"choose EfficientNet-Lite0 (offline)"
            + (" or a local SwAV checkpoint" if model == "swav_resnet50" else "")) from e


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


# --- prototype scores ------------------------------------------------------------------

class ComputePrototypeScores(_PruneOperator):
    NAME = "compute_prototype_scores"
    LABEL = "Prune: compute prototype scores"
    DESCRIPTION = ("Score every sample by its cosine distance to k-means prototypes "
                   "(label-free) or to its class prototype")

    def resolve_execution_options(self, ctx):
        return common.execution_options(ctx, always_delegate_above=100_000)

    def resolve_input(self, ctx):
        from fiftyone_prune.sdk.scores import check_scoring_inputs

        inputs = types.Object()
        common.add_view_target(ctx, inputs)
        # object-level scoring, as the embeddings form offers object-level vectors: the
        # Detection(s) fields whose labels carry vectors
        object_fields = [f for f in _patch_fields(ctx.dataset)
                         if validation.object_vector_attributes(ctx.dataset, f)]
        patches = ctx.params.get("patches_field")
        patches = patches if patches in object_fields else None
        vector_fields = (validation.object_vector_attributes(ctx.dataset, patches) if patches
                         else validation.vector_fields(ctx.dataset))
        if not vector_fields and not object_fields:
            common.error_notice(
                inputs, "no_vectors",
                "This dataset has no embeddings yet: run 'Prune: compute embeddings' first",
            )
            return common.form(ctx, inputs, "Compute prototype scores")
        if object_fields:
            _dropdown(inputs, "patches_field",
                      [(_WHOLE_IMAGES, "None: score whole images")]
                      + [(f, f"{f}: score each object") for f in object_fields],
                      "Patches field", default=_WHOLE_IMAGES, required=False,
                      description="A Detection(s) field whose objects were embedded: each "
                                  "object is scored on its label "
                                  "(<labels>.<run key>_distance)")
        if not vector_fields:
            common.error_notice(
                inputs, "no_image_vectors",
                "No image embeddings yet: choose a patches field to score objects, or run "
                "'Prune: compute embeddings' on the images first")
            return common.form(ctx, inputs, "Compute prototype scores")
        _dropdown(inputs, "embeddings_field", [(f, f) for f in vector_fields],
                  "Embeddings field", default=vector_fields[0],
                  description=("The objects' vector attribute" if patches else
                               "The vector field to score")
                  + " (from 'Prune: compute embeddings')")
        label_fields = [] if patches else validation.classification_fields(ctx.dataset)
        methods = types.RadioGroup()
        methods.add_choice("kmeans", label="Self-supervised prototypes (k-means, label-free)")
        if patches:
            methods.add_choice("supervised", label="Class prototypes (each object's label)")
        elif label_fields:
            methods.add_choice("supervised", label="Class prototypes (needs a label field)")
        inputs.enum("method", methods.values(), default="kmeans", view=methods, label="Method",
                    description="Where the prototypes come from: k-means clusters of the "
                                "embeddings, or the mean embedding of each class")
        method = ctx.params.get("method", "kmeans")
        if method not in methods.values():
            method = "kmeans"
        if label_fields:
            _dropdown(inputs, "label_field", [(f, f) for f in label_fields],
                      "Label field" + ("" if method == "supervised"
                                       else " (optional: k = number of classes)"),
                      required=method == "supervised",
                      description="A Classification field; its classes are the prototypes "
                                  "(class method) or set k (k-means)")
        if method == "kmeans":
            inputs.str(
                "num_clusters", label="Number of prototypes k (optional)",
                description="Empty: the number of classes of the label field when one is "
                            "chosen, else round(sqrt(n/2)). Several "
                            "comma-separated values (e.g. 10,100) are combined by mean rank.",
            )
        # a taken default would open the form invalid: propose the next free key
        default_key = common.free_key(ctx.dataset, "prototypes")
        inputs.str("run_key", default=default_key, required=True, label="Run key",
                   description="Fields <key>_distance and <key>_cluster are written"
                               + (" on each object's label" if patches else ""))
        inputs.bool("overwrite", default=False, label="Replace an existing run",
                    description="Replace the run with this key and its fields")
        num_shards = (_add_num_shards(ctx, inputs) if method == "kmeans" and not patches
                      else None)
        p = ctx.params
        try:  # the SDK's own checks, as execute will call it
            ks = parse_num_clusters(p.get("num_clusters")) if method == "kmeans" else None
            check_scoring_inputs(common.target_view(ctx),
                                 p.get("embeddings_field") or vector_fields[0],
                                 p.get("run_key", default_key), method=method,
                                 num_clusters=ks,
                                 label_field=None if patches else p.get("label_field") or None,
                                 overwrite=bool(p.get("overwrite", False)),
                                 num_shards=num_shards, delegate=num_shards is not None,
                                 patches_field=patches)
        except ValueError as e:
            common.show_error(inputs, e)
        common.schedule_hint(ctx, inputs, above=50_000)
        return common.form(ctx, inputs, "Compute prototype scores")

    def execute(self, ctx):
        from fiftyone_prune.sdk.scores import compute_prototype_scores

        p = ctx.params
        method = p.get("method", "kmeans")
        view = common.target_view(ctx)
        num_shards = _whole_number(p.get("num_shards") or 1) if method == "kmeans" else 1
        patches = p.get("patches_field")
        patches = None if patches in (None, "", _WHOLE_IMAGES) else patches
        kwargs = dict(
            embeddings_field=p["embeddings_field"], run_key=p.get("run_key", "prototypes"),
            method=method,
            num_clusters=parse_num_clusters(p.get("num_clusters")) if method == "kmeans" else None,
            label_field=None if patches else p.get("label_field") or None,
            overwrite=bool(p.get("overwrite", False)))
        if patches:
            kwargs["patches_field"] = patches

        def work(progress):
            if num_shards > 1:
                progress.stage(f"Scoring: k-means, then queueing {num_shards} tasks")
                return _queued(compute_prototype_scores(view, num_shards=num_shards,
                                                        delegate=True, **kwargs))
            # reading the vectors and k-means report nothing until the writes start
            progress.stage("Scoring: reading embeddings, "
                           + ("k-means" if method == "kmeans" else "class prototypes"))
            return compute_prototype_scores(
                view, **kwargs,
                progress=progress.bar("Scoring: writing {done}/{total} scores"),
            ).to_dict()

        return common.execute_with_progress(self, ctx, work, after=_reload)

    def resolve_output(self, ctx):
        queued = _queued_output(ctx)
        if queued is not None:
            return queued
        outputs = types.Object()
        outputs.str("distance_field", label="Distance field")
        outputs.str("cluster_field", label="Cluster field")
        outputs.int("num_scored", label="Scored")
        outputs.int("num_skipped", label="Skipped (no embedding)")
        return types.Property(outputs, view=types.View(label="Prototype scores computed"))

    def __call__(self, sample_collection, embeddings_field, run_key="prototypes",
                 method="kmeans", num_clusters=None, label_field=None, overwrite=False,
                 num_shards=1, delegate=False, patches_field=None):
        """Scores every sample (or every object of ``patches_field``) by its cosine
        distance to a prototype, as the App's form does
        (:func:`fiftyone_prune.compute_prototype_scores`).

        Example usage::

            import fiftyone.operators as foo
            import fiftyone_prune as fop

            dataset = fop.load_demo_dataset("prune-demo", max_samples=50)
            fop.compute_embeddings(dataset, model="efficientnet_lite0",
                                   embeddings_field="emb")
            score = foo.get_operator("@fiftyone-prune/prune/compute_prototype_scores")
            score(dataset, "emb", run_key="prototypes", num_clusters=5)

            # or split it into 4 tasks for `fiftyone delegated launch` workers
            score(dataset, "emb", run_key="sharded", num_clusters=5, num_shards=4)

        Args:
            sample_collection: a dataset or view
            embeddings_field: the vector field to score
            run_key ("prototypes"): the run's key; ``<key>_distance`` and
                ``<key>_cluster`` are written
            method ("kmeans"): ``"kmeans"`` (label-free) or ``"supervised"`` (one
                prototype per class of ``label_field``)
            num_clusters (None): k, a list of k values, or text such as ``"10,100"``
            label_field (None): a Classification field
            overwrite (False): replace an existing run with this key
            num_shards (1): with M > 1 (k-means), train k-means here and queue M tasks
                that assign and write disjoint slices, for ``fiftyone delegated launch``
            delegate (False): schedule the operation instead of running it now
            patches_field (None): a Detection(s) field whose labels carry the vector
                attribute ``embeddings_field``: score each object on its label

        Returns:
            the :class:`fiftyone_prune.sdk.scores.ScoreResult` as a dict; with
            ``num_shards`` > 1 the queued tasks; with ``delegate=True`` the queued
            operation
        """
        if isinstance(num_clusters, (list, tuple)):
            num_clusters = ",".join(str(k) for k in num_clusters)
        elif num_clusters is not None:
            num_clusters = str(num_clusters)
        params = dict(embeddings_field=embeddings_field, run_key=run_key, method=method,
                      num_clusters=num_clusters, label_field=label_field, overwrite=overwrite,
                      num_shards=num_shards)
        if patches_field is not None:
            params["patches_field"] = patches_field
        return common.call_operator(self.uri, sample_collection, params, delegate)


# --- selection -------------------------------------------------------------------------

#: views larger than this get no live preview in the select form (it reads every score)
PREVIEW_LIMIT = 200_000


def _dropdown(inputs, name, options, label, default=None, required=True, description=None):
    view = types.Dropdown()
    for value, text in options:
        view.add_choice(value, label=text)
    return inputs.enum(name, view.values(), default=default, required=required, label=label,
                       description=description, view=view)


def selection_request(params) -> tuple[str, SelectionSpec, str | None]:
    """The select form's values as the SDK takes them: ``(run_key, spec, name)``.

    Raises:
        ParameterError: naming the input (``keep``, ``balance_ratio``...) that is wrong
    """
    return (params.get("run_key"), selection_spec_from_inputs(params),
            params.get("name") or None)


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


def _offer_quick_evaluation(inputs, view, plan, run_key, spec):
    from fiftyone_prune.sdk.advice import quick_evaluation_offer

    kept = len(plan.kept_ids)
    offer = quick_evaluation_offer(view, run_key, kept / max(1, kept + len(plan.pruned_ids)),
                                   spec.balance, spec.label_field)
    if offer:
        inputs.view("quick_evaluation", types.Notice(label=(
            f"{offer['message']}: run 'Prune: evaluate pruning against random' with "
            f"fractions {offer['kwargs']['fractions'][0]} first; auto then follows it")))


def _plan(view, run_key, spec, name):
    from fiftyone_prune.sdk.selection import plan_selection

    return plan_selection(view, run_key=run_key, name=name, spec=spec)


class SelectSamples(_PruneOperator):
    NAME = "select_samples"
    LABEL = "Prune: select samples to keep"
    DESCRIPTION = ("Choose what to keep from prototype scores (hard/easy/auto/CCS/density/"
                   "random, class or cluster balance, SemDeDup); tags and a saved view, "
                   "nothing deleted")
    ICON = "/assets/select.svg"

    def resolve_input(self, ctx):
        # its preview of "auto" reads the evaluations, as the panel does
        with common.reading_runs(ctx):
            return self._form(ctx)

    def _form(self, ctx):
        from fiftyone_prune.sdk.selection import check_selection, check_selection_name_free

        inputs = types.Object()
        common.add_view_target(ctx, inputs)
        score_runs = common.runs_newest_first(ctx.dataset, "prototypes")
        if not score_runs:
            common.error_notice(inputs, "no_runs", "No prototype scores yet: run 'Prune: "
                                "compute prototype scores' first")
            return common.form(ctx, inputs, "Select samples")
        view = common.unpatched(common.target_view(ctx))  # objects shown as patches
        default_run = common.default_scoring_run(view, score_runs)
        _dropdown(inputs, "run_key", [(k, k) for k in score_runs], "Scoring run",
                  default=default_run,
                  description="The prototype scores to select by (default: the most recent "
                              "run that scored these samples)")
        inputs.float("keep", default=0.8, required=True, label="Keep",
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
        run_key = ctx.params.get("run_key") or default_run
        # an object-level run selects objects: classes are their own labels, no SemDeDup
        objects = getattr(ctx.dataset.get_run_info(run_key).config, "patches_field", None) \
            if run_key in score_runs else None
        label_fields = [] if objects else validation.classification_fields(ctx.dataset)
        balance_opts = [("cluster", "per cluster"), ("none", "none")]
        if label_fields or objects:
            balance_opts.insert(1, ("class", "per class" + (" (the objects' labels)"
                                                            if objects else "")))
        _dropdown(inputs, "balance", balance_opts, "Balance", default="cluster",
                  description="Each group keeps at least balance_ratio of its fair share")
        if ctx.params.get("balance") == "class" and label_fields:
            _dropdown(inputs, "label_field", [(f, f) for f in label_fields], "Label field",
                      default=label_fields[0],
                      description="The Classification field whose classes are balanced")
        inputs.float("balance_ratio", default=0.5, label="Balance ratio", required=True,
                     description="The floor of each group, as a fraction of its fair share "
                                 "(kept / number of groups); 0 disables floors")
        if not objects:
            inputs.float("dedup_eps", label="SemDeDup eps (optional)",
                         description="Remove near-duplicates first: cosine similarity > "
                                     "1 - eps inside a cluster (e.g. 0.05)")
        inputs.int("seed", default=51, label="Seed",
                   description="For the random choices (random, ccs, ties)")
        inputs.str("name", label="Selection name (optional)",
                   description=f"Tags <name>:kept / <name>:pruned "
                               f"{'on the objects of ' + objects + ' ' if objects else ''}"
                               f"and saved view <name>-kept; default: the run key ({run_key})")
        inputs.bool("overwrite", default=False, label="Replace an existing run",
                    description="Replace the tags and saved view of a selection with this name")
        # the preview comes last: it depends on every input above
        try:
            check_selection_name_free(view, ctx.params.get("name") or run_key,
                                      bool(ctx.params.get("overwrite")))
            _, spec, name = selection_request(dict(ctx.params, run_key=run_key))
            if len(view) > PREVIEW_LIMIT:
                check_selection(view, run_key, spec, name=name)
                inputs.view("preview", types.Notice(
                    label=f"Preview skipped for views over {PREVIEW_LIMIT:,} samples"))
            elif spec.dedup_eps is None:
                plan = _plan(view, run_key, spec, name)
                scope = (f"{len(plan.kept_ids) + len(plan.pruned_ids)} scored objects of "
                         f"'{objects}'" if objects else f"{len(view)} samples")
                inputs.md(f"**Preview** on {scope}\n\n" + _preview_markdown(plan),
                          name="preview")
                if spec.strategy == "auto":
                    _offer_quick_evaluation(inputs, view, plan, run_key, spec)
            else:
                inputs.view("preview", types.Notice(
                    label="Preview without SemDeDup counts (deduplication runs on Execute)"))
                plan = _plan(view, run_key, spec.replace(dedup_eps=None), name)
                inputs.md(_preview_markdown(plan), name="preview_table")
        except ValueError as e:
            common.show_error(inputs, e)
        return common.form(ctx, inputs, "Select samples")

    def execute(self, ctx):
        from fiftyone_prune.sdk.selection import apply_plan, selection_names

        view = common.unpatched(common.target_view(ctx))
        run_key, spec, name = selection_request(ctx.params)

        def work(progress):
            progress.stage("Selecting: reading scores")
            plan = _plan(view, run_key, spec, name)
            progress.stage(f"Selecting: tagging {len(plan.kept_ids)} kept and "
                           f"{len(plan.pruned_ids)} pruned samples")
            apply_plan(view, plan, overwrite=bool(ctx.params.get("overwrite")))
            summary = plan.summary()
            summary["warning"] = keep_shortfall(plan.budget, len(plan.kept_ids),
                                                len(plan.duplicate_ids),
                                                spec.dedup_eps) or ""
            return summary

        def after(ctx, summary):
            # the App's set_view(name=...) only finds saved views it had loaded before
            # this run (FiftyOne's own save_view operator has the same "@todo"); neither
            # reload_dataset first nor a set_view(name=...) from a triggered follow-up
            # operator refreshes that list (tried in Chromium, FiftyOne 1.22): pass the
            # view itself and say its saved name
            saved = selection_names(summary["name"])["view"]
            kept = ctx.dataset.load_saved_view(saved)
            return [ctx.ops.reload_dataset(), ctx.ops.set_view(view=kept),
                    ctx.ops.notify(f"Showing the kept samples: saved view '{saved}' "
                                   f"(in the saved views menu)", variant="success")]

        return common.execute_with_progress(self, ctx, work, after=after)

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("strategy", label="Strategy used")
        outputs.str("strategy_reason", label="Why")
        outputs.int("num_kept", label="Kept")
        outputs.int("num_pruned", label="Pruned")
        warning = (ctx.results or {}).get("warning")
        if warning:
            outputs.view("warning", types.Warning(label=warning))
        return types.Property(outputs, view=types.View(label="Selection applied"))

    def __call__(self, sample_collection, run_key="prototypes", keep=0.8, strategy="auto",
                 balance="cluster", label_field=None, balance_ratio=0.5, seed=51,
                 dedup_eps=None, name=None, overwrite=False, delegate=False):
        """Selects the samples to keep, as the App's form does
        (:func:`fiftyone_prune.select_samples`): tags ``<name>:kept`` /
        ``<name>:pruned`` and saves the view ``<name>-kept``; nothing is deleted.

        Example usage::

            import fiftyone.operators as foo
            import fiftyone_prune as fop

            dataset = fop.load_demo_dataset("prune-demo", max_samples=50)
            fop.compute_embeddings(dataset, model="efficientnet_lite0",
                                   embeddings_field="emb")
            fop.compute_prototype_scores(dataset, "emb", num_clusters=5)
            select = foo.get_operator("@fiftyone-prune/prune/select_samples")
            select(dataset, keep=0.8, strategy="hard", name="hard80")
            print(dataset.load_saved_view("hard80-kept"))

        Args:
            sample_collection: the dataset or view to select from
            run_key ("prototypes"): the scoring run
            keep (0.8): a fraction in (0, 1] or a count
            strategy ("auto"): ``"auto"``, ``"hard"``, ``"easy"``, ``"ccs"``,
                ``"density"`` or ``"random"``
            balance ("cluster"): ``"cluster"``, ``"class"`` or None
            label_field (None): the Classification field for ``balance="class"``
            balance_ratio (0.5): each group's floor, as a fraction of its fair share
            seed (51): the seed of the random choices
            dedup_eps (None): SemDeDup first, with this cosine-distance threshold
            name (None): the selection's name (default: ``run_key``)
            overwrite (False): replace a selection with this name
            delegate (False): schedule the operation instead of running it now

        Returns:
            the selection's summary (``strategy``, ``num_kept``, ``num_pruned``...;
            ``warning``: why it kept fewer than asked, or "")
        """
        params = dict(run_key=run_key, keep=keep, strategy=strategy,
                      balance="none" if balance is None else balance, label_field=label_field,
                      balance_ratio=balance_ratio, seed=seed, dedup_eps=dedup_eps, name=name,
                      overwrite=overwrite)
        return common.call_operator(self.uri, sample_collection, params, delegate)
class ExportKeptSamples(_PruneOperator):
    NAME = "export_kept_samples"
    LABEL = "Prune: export kept samples"
    DESCRIPTION = "Export the kept subset in any FiftyOne format, with a manifest"
    ICON = "/assets/export.svg"

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
        inputs.file("export_dir", required=True, label="Export directory",
                          description="A new or empty folder outside the dataset's media "
                                      "folders (type a path or choose one)",
                          view=types.FileExplorerView(choose_dir=True,
                                                      button_label="Choose a folder..."))
        inputs.bool("overwrite", default=False, label="Replace a previous export",
                    description="Replace a previous fiftyone-prune export in this folder "
                                "(anything else is never deleted)")
        export_dir = _path_param(ctx.params.get("export_dir"))
        if isinstance(ctx.params.get("export_dir"), str):
            # a path from Python, as the App's file input sends it (FiftyOne's validation
            # of that input reads an object)
            ctx.params["export_dir"] = {"absolute_path": export_dir}
        if not export_dir:
            # also when emptied: the App then sends no value, which its own check of a
            # required file input lets through (Execute was enabled)
            common.mark_invalid(inputs.properties["export_dir"],
                                "Type or choose the folder to export to")
        else:
            if not os.path.isabs(os.path.expanduser(export_dir)):
                # typed in the App, a relative path is the server's, not the browser's
                inputs.view("relative_path", types.Notice(label=(
                    f"A relative path resolves against the App server's working directory: "
                    f"this exports to {os.path.abspath(os.path.expanduser(export_dir))}. "
                    f"Type an absolute path to export elsewhere")))
            try:
                check_export_dir(view, export_dir, bool(ctx.params.get("overwrite", False)))
            except ValueError as e:
                # every problem check_export_dir finds is about the folder
                common.show_error(inputs, e, default="export_dir",
                                  tick="Replace a previous export")
        return common.form(ctx, inputs, "Export kept samples")

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
        selection's kept samples, as the App's form does
        (:func:`fiftyone_prune.export_kept_samples`), with a manifest.

        Example usage::

            import fiftyone.operators as foo
            import fiftyone_prune as fop

            dataset = fop.load_demo_dataset("prune-demo", max_samples=50)
            fop.compute_embeddings(dataset, model="efficientnet_lite0",
                                   embeddings_field="emb")
            fop.compute_prototype_scores(dataset, "emb", num_clusters=5)
            fop.select_samples(dataset, keep=0.8, name="kept80")
            export = foo.get_operator("@fiftyone-prune/prune/export_kept_samples")
            export(dataset, "/tmp/kept80", dataset_type="image_classification_tree",
                   label_field="ground_truth", selection="kept80")

        Args:
            sample_collection: the samples to export (with ``selection``: the dataset
                whose selection is exported)
            export_dir: a new or empty folder (or a previous export, with ``overwrite``)
            dataset_type ("fiftyone"): ``"fiftyone"``, ``"image_classification_tree"``,
                ``"image_classification_csv"``, ``"coco"``, ``"yolo"``, ``"voc"`` or
                ``"media"``
            label_field (None): the labels that label formats write
            overwrite (False): replace a previous fiftyone-prune export in ``export_dir``
            selection (None): export this selection's kept samples
            delegate (False): schedule the operation instead of running it now

        Returns:
            the export's report (``export_dir``, ``num_samples``, ``manifest``...)
        """
        params = dict(export_dir=str(export_dir),
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


def _export_view(ctx, selection):
    """What the export form exports: a selection's saved kept view, or the target view."""
    from fiftyone_prune.sdk.selection import selection_names

    if selection == _EXPORT_VIEW:
        return common.target_view(ctx)
    names = selection_names(selection)
    if names["view"] in ctx.dataset.list_saved_views():
        return ctx.dataset.load_saved_view(names["view"])
    return ctx.dataset.match_tags(names["kept_tag"])  # (a selection of objects has its view)


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


#: the evaluation form's default kept fractions
DEFAULT_FRACTIONS = "0.1,0.2,0.3,0.5,0.7,0.9"


class EvaluatePruning(_PruneOperator):
    NAME = "evaluate_pruning"
    LABEL = "Prune: evaluate pruning against random"
    DESCRIPTION = ("Train a probe on each selection and compare held-out accuracy with "
                   "random selection and with all data")
    ICON = "/assets/evaluate.svg"
    OPTIONS = dict(default_choice_to_delegated=True)

    def resolve_input(self, ctx):
        from fiftyone_prune.sdk.evaluation import check_evaluation

        inputs = types.Object()
        common.add_view_target(ctx, inputs)
        score_runs = common.runs_newest_first(ctx.dataset, "prototypes")
        label_fields = validation.classification_fields(ctx.dataset)
        if not score_runs or not label_fields:
            common.error_notice(inputs, "missing", "Needs a prototype-score run and a "
                                "Classification label field: run 'Prune: compute prototype "
                                "scores' first" if not score_runs else
                                "Needs a Classification label field to train the probe")
            return common.form(ctx, inputs, "Evaluate pruning")
        default_run = common.default_scoring_run(common.target_view(ctx), score_runs)
        _dropdown(inputs, "run_key", [(k, k) for k in score_runs], "Scoring run",
                  default=default_run,
                  description="The prototype scores whose selections are evaluated "
                              "(default: the most recent run that scored these samples)")
        _dropdown(inputs, "label_field", [(f, f) for f in label_fields], "Label field",
                  default=label_fields[0],
                  description="Classification labels the probe learns and is tested on")
        inputs.str("fractions", default=DEFAULT_FRACTIONS, label="Kept fractions",
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
        p = ctx.params
        default_key = _evaluation_key(ctx.dataset, dict(p, run_key=p.get("run_key", default_run),
                                                        eval_key=None))
        inputs.str("eval_key", label="Run key (optional)",
                   description=f"Names the evaluation run (default: {default_key}, the next "
                               f"free <scoring run>_evaluation)")
        inputs.bool("overwrite", default=False, label="Replace an existing run",
                    description="Replace an evaluation with the same run key")
        try:
            check_evaluation(common.target_view(ctx), p.get("label_field", label_fields[0]),
                             p.get("run_key", default_run),
                             fractions=parse_fractions(p.get("fractions", DEFAULT_FRACTIONS)),
                             strategies=p.get("strategies") or ["random"],
                             seeds=_whole_number(p.get("seeds", 3)),
                             probe=p.get("probe", "linear"),
                             eval_key=p.get("eval_key") or default_key,
                             overwrite=bool(p.get("overwrite")))
        except ValueError as e:
            common.show_error(inputs, e)
        common.schedule_hint(ctx, inputs, above=0)
        return common.form(ctx, inputs, "Evaluate pruning")

    def execute(self, ctx):
        from fiftyone_prune.sdk.evaluation import evaluate_pruning

        p = ctx.params
        view = common.target_view(ctx)

        def work(progress):
            progress.stage("Evaluating: reading embeddings and scores")
            result = evaluate_pruning(
                view, label_field=p["label_field"], run_key=p["run_key"],
                fractions=parse_fractions(p.get("fractions", DEFAULT_FRACTIONS)),
                strategies=p.get("strategies") or ["random"],
                seeds=_whole_number(p.get("seeds", 3)),
                probe=p.get("probe", "linear"), eval_key=_evaluation_key(view, p),
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
        """Trains a probe on each strategy's selection at each kept fraction and compares
        its held-out accuracy with random selection and with all data, as the App's form
        does (:func:`fiftyone_prune.evaluate_pruning`).

        Example usage::

            import fiftyone.operators as foo
            import fiftyone_prune as fop

            dataset = fop.load_demo_dataset("prune-demo", max_samples=200)
            fop.compute_embeddings(dataset, model="efficientnet_lite0",
                                   embeddings_field="emb")
            fop.compute_prototype_scores(dataset, "emb", num_clusters=10)
            evaluate = foo.get_operator("@fiftyone-prune/prune/evaluate_pruning")
            result = evaluate(dataset, "ground_truth", fractions=(0.5,), seeds=1)
            print(result["verdicts"])

        Args:
            sample_collection: a dataset or view with labels and a scoring run
            label_field: the Classification field the probe learns
            run_key ("prototypes"): the scoring run whose selections are evaluated
            fractions ((0.1, 0.2, 0.3, 0.5, 0.7, 0.9)): kept fractions in (0, 1]
            strategies (("random", "easy", "hard", "ccs")): the strategies compared
            seeds (3): probes trained per strategy and fraction
            probe ("linear"): ``"linear"`` (on the embeddings) or ``"cnn"`` (on images)
            eval_key (None): the evaluation run's key (default
                ``<run_key>_evaluation``, or the next free ``<run_key>_evaluation_2``...
                when that is taken and ``overwrite`` is False)
            overwrite (False): replace an evaluation with this key
            delegate (False): schedule the operation instead of running it now

        Returns:
            ``{"eval_key", "verdicts"}``
        """
        params = dict(label_field=label_field, run_key=run_key,
                      fractions=",".join(str(f) for f in fractions), strategies=list(strategies),
                      seeds=seeds, probe=probe, eval_key=eval_key, overwrite=overwrite)
        return common.call_operator(self.uri, sample_collection, params, delegate)


def _evaluation_key(samples, params) -> str:
    """The evaluation form's run key: the one typed, else ``<scoring run>_evaluation``,
    or the next free one when that is taken and 'Replace an existing run' is not ticked
    (a taken default would open the form invalid)."""
    if params.get("eval_key"):
        return params["eval_key"]
    base = f"{params['run_key']}_evaluation"
    return base if params.get("overwrite") else common.free_key(samples, base)


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


def plain_value(value) -> str:
    """A run parameter as the App shows it: ``a: 1, b: 2`` for a mapping (never
    ``OrderedDict([...])``), ``x, y`` for a list, ``none`` for None."""
    if value is None:
        return "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {plain_value(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple, set)):
        return ", ".join(plain_value(v) for v in value) or "none"
    return str(value)


def run_markdown(summary: dict) -> str:
    """One run's summary as the App shows it."""
    lines = [f"**{summary['run_key']}**: {summary['kind']} run, registered "
             f"{summary['timestamp'] or '?'}", "",
             f"**Status**: {summary['status']}", "",
             "| parameter | value |", "|---|---|"]
    for name, value in sorted(summary["params"].items()):
        text = plain_value(value).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {name} | {text[:120]} |")
    lines += ["", f"**Fields**: {_code_list(summary['fields'])}",
              "", f"**Tags**: {_code_list(summary['tags'])}",
              "", f"**Saved views**: {_code_list(summary['saved_views'])}"]
    if summary["dependents"]:
        lines += ["", f"**Made from it**: {_code_list(summary['dependents'])}"]
    return "\n".join(lines)


class GetRunInfo(_PruneOperator):
    NAME = "get_pruning_run_info"
    LABEL = "Prune: run info"
    DESCRIPTION = ("List the pruning runs of this dataset: parameters, status and the "
                   "fields, tags and saved views each created")
    QUICK = True

    def resolve_input(self, ctx):
        from fiftyone_prune.sdk import runs

        inputs = types.Object()
        key = _run_choice(ctx, inputs, description="Scoring, selection and evaluation "
                                                   "runs, the most recent first")
        if key is not None:
            inputs.md(run_markdown(runs.run_summary(ctx.dataset, key)), name="info")
        return common.form(ctx, inputs, "Pruning runs")

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


class LoadRunView(_PruneOperator):
    NAME = "load_pruning_run_view"
    LABEL = "Prune: load a run's samples"
    DESCRIPTION = ("Show a selection's kept (or pruned) samples, or a scoring run's "
                   "samples hardest first")
    ICON = "/assets/select.svg"
    QUICK = True

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
        return common.form(ctx, inputs, "Load a run's samples")

    def execute(self, ctx):
        from fiftyone_prune.sdk import runs
        from fiftyone_prune.sdk.selection import selection_names

        key = ctx.params["run_key"]
        cfg = runs.get_run_info(ctx.dataset, key).config
        if cfg.kind == "prototypes":  # (an object-level run's objects, as patches)
            view, distance, _ = runs.scored_view(ctx.dataset, cfg)
            ctx.ops.set_view(view.sort_by(distance, reverse=True))
            return
        names = selection_names(cfg.name)
        part = ctx.params.get("part") or "kept"
        if part == "kept" and ctx.dataset.has_saved_view(names["view"]):
            ctx.ops.set_view(name=names["view"])
        else:
            ctx.ops.set_view(runs.kept_view(ctx.dataset, cfg.name,
                                            runs.selection_labels(cfg), part))


def _kind(ctx, key):
    from fiftyone_prune.sdk import runs

    return runs.get_run_info(ctx.dataset, key).config.kind


class RenameRun(_PruneOperator):
    NAME = "rename_pruning_run"
    LABEL = "Prune: rename a run"
    DESCRIPTION = ("Give a run a new key: what it owns follows (a scoring run's fields, "
                   "a selection's tags and saved view), and so do the runs made from it")
    QUICK = True

    def resolve_input(self, ctx):
        inputs = types.Object()
        key = _run_choice(ctx, inputs, description="The run to rename")
        if key is None:
            return common.form(ctx, inputs, "Rename a run")
        inputs.str("new_run_key", required=True, label="New run key",
                   description="Letters, digits and underscores. A selection's key is "
                               "<name>_selection: <name> becomes its tags' and saved "
                               "view's name")
        new_key = ctx.params.get("new_run_key")
        if new_key:
            try:
                validation.check_run_key(new_key, param="new_run_key")
                if new_key in ctx.dataset.list_runs():
                    raise ParameterError(f"Run key {new_key!r} is already used: choose "
                                         f"another", "new_run_key")
            except ValueError as e:
                common.show_error(inputs, e, default="new_run_key")
        return common.form(ctx, inputs, "Rename a run")

    def execute(self, ctx):
        from fiftyone_prune.sdk import runs

        runs.rename_run(ctx.dataset, ctx.params["run_key"], ctx.params["new_run_key"])
        ctx.ops.notify(f"Run {ctx.params['run_key']!r} is now "
                       f"{ctx.params['new_run_key']!r}", variant="success")


class DeleteRun(_PruneOperator):
    NAME = "delete_pruning_run"
    LABEL = "Prune: delete a run"
    DESCRIPTION = "Delete a run with the fields, tags and saved views it created"
    QUICK = True

    def resolve_input(self, ctx):
        from fiftyone_prune.sdk import runs

        inputs = types.Object()
        key = _run_choice(ctx, inputs, description="The run to delete")
        if key is None:
            return common.form(ctx, inputs, "Delete a run")
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
        return common.form(ctx, inputs, "Delete a run")

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
