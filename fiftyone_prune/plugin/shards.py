"""The operator that runs one shard of a sharded run (:mod:`fiftyone_prune.sdk.shards`).

``compute_embeddings`` / ``compute_prototype_scores`` with ``num_shards=M,
delegate=True`` queue M of these; each ``fiftyone delegated launch`` worker that claims
one runs that shard. It is unlisted: the App starts sharded runs through the SDK's
queueing call, never this operator directly.
"""

from __future__ import annotations

import fiftyone.operators as foo
import fiftyone.operators.types as types


class RunShard(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="run_shard",
            label="Prune: run one shard of a sharded run",
            unlisted=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_run_name(self, ctx):
        """What ``fiftyone delegated list`` and the App's runs list show for this
        operation: the run and the shard, not only the operator's name."""
        params = ctx.params
        return (f"prune {params.get('key')} shard {params.get('shard')} "
                f"({params.get('dataset')})")

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.str("dataset", required=True, label="Dataset")
        inputs.str("key", required=True, label="Run key (or embeddings field)")
        inputs.int("shard", required=True, label="Shard index")
        return types.Property(inputs)

    def execute(self, ctx):
        from fiftyone_prune.sdk import shards

        dataset = ctx.params["dataset"]
        key, index = ctx.params["key"], int(ctx.params["shard"])
        result = shards.run_shard(dataset, key, index)
        status = shards.shard_status(dataset, key)
        return {"key": key, "shard": index, "result": result,
                "samples_done": status["samples_done"], "total": status["total"],
                "complete": status["complete"]}


OPERATORS = [RunShard]
