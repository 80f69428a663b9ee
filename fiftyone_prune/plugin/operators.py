"""App operators: each parses its form and calls one SDK function."""

from __future__ import annotations

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_prune.plugin import common
from fiftyone_prune.sdk import validation

PLUGIN = "@fiftyone-prune/prune"


class ComputeEmbeddings(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="compute_embeddings",
            label="Prune: compute embeddings",
            description=(
                "Embed images with SwAV ResNet-50 (the data-pruning paper's model) or "
                "another model and store the vectors as a sample field"
            ),
            icon="/assets/embed.svg",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
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
                    label="Model", required=True)
        model = ctx.params.get("model", BUILTIN_MODELS[0])
        if model == "zoo":
            inputs.str("zoo_model", label="Zoo model name", required=True,
                       description="e.g. clip-vit-base32-torch (must support embeddings)")
        if model == "swav_resnet50":
            inputs.str("checkpoint_path", label="SwAV checkpoint (optional)",
                       description="Local swav_800ep_pretrain.pth.tar; default: torch.hub cache")
        default_field = "swav_embedding" if model == "swav_resnet50" else f"{model}_embedding"
        field = inputs.str("embeddings_field", label="Embeddings field", required=True,
                           default=default_field)
        name = ctx.params.get("embeddings_field", default_field)
        if name:
            try:
                validation.check_new_field(ctx.dataset, name, fo.VectorField, "embeddings field")
            except ValueError as e:
                common.mark_invalid(field, str(e))
        batch = inputs.int("batch_size", label="Batch size", default=32, required=True)
        if not isinstance(ctx.params.get("batch_size", 32), int) or ctx.params.get("batch_size", 32) < 1:
            common.mark_invalid(batch, "Batch size must be a positive integer")
        inputs.bool("skip_existing", label="Skip samples that already have embeddings",
                    default=True)
        return common.form(inputs, "Compute embeddings")

    def execute(self, ctx):
        from fiftyone_prune.sdk.embeddings import compute_embeddings

        p = ctx.params
        model = p.get("zoo_model") if p.get("model") == "zoo" else p.get("model", "swav_resnet50")
        result = compute_embeddings(
            common.target_view(ctx),
            model=model,
            embeddings_field=p.get("embeddings_field", "swav_embedding"),
            batch_size=p.get("batch_size", 32),
            # worker processes can't be forked safely inside the App server
            num_workers=None if ctx.delegated else 0,
            skip_existing=p.get("skip_existing", True),
            checkpoint_path=p.get("checkpoint_path") or None,
            progress=common.progress_callback(ctx, "Embedding images"),
        )
        if not ctx.delegated:
            ctx.trigger("reload_dataset")
        return result.to_dict()

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


OPERATORS = [ComputeEmbeddings]
