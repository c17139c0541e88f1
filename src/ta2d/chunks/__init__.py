"""The chunk contract and what reads and writes chunks: patch extraction (build_patch_chunk), the
batch loader, normalisation statistics, unlabelled tiles, inspection and the run summary."""
