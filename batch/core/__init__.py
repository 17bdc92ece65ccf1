"""The bottom layer: the project's shared vocabulary, importable from every other layer.

    errors    typed errors that carry their pipeline stage; the process exit codes
    schema    the output records (DocumentRecord -> Page -> Line -> Word, ErrorRecord) and their
              Parquet (Arrow) schemas
    ids       document ids (content or URI hashes) and run ids
    manifest  the labelled-data records (Sample, Annotation) and their JSON-lines form
    clock     the stage-timing hook the pipeline and its runners report to (no-op by default)

Nothing here imports from the rest of the project (tests/test_layers.py checks it), and this
package's __init__ imports nothing, so `models/` and `transforms/` can use it without pulling in
the pipeline or the apps.
"""
