"""htr-batch. The import layers, top to bottom (tests/test_layers.py holds the table and fails on
an import that goes up):

    apps and jobs      batch.cli, batch.worker, batch.serve, batch.query, batch.exports.cli,
                       batch.sagemaker_code, jobs.*
    pipeline, outputs  batch.pipeline, batch.lines, batch.outputs, batch.exports, batch.ledger,
                       batch.storage, batch.athena, batch.packaging
    models, transforms models.* (networks, checkpoints, decoding), transforms.* (rasterising,
                       geometry, page normalising, synthetic data)
    core               batch.core: errors (stage, exit codes), schema (records), ids, manifest

This file imports nothing, so `import batch.core...` from models/ or transforms/ loads no more
than batch.core itself.
"""
