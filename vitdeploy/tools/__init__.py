"""Tools around the pipeline, not part of it: the coverage matrix, the GPU proof and its report, bench's
report, `vitdeploy doctor` and the hardware facts they (and the runtimes' checks) read."""
