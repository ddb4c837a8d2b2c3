# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""MAEST tools: the command-line programs around the remote-code model, and the library they share.

The root modules (`configuration_maest`, `modeling_maest`, `feature_extraction_maest`, `audio_maest`,
`pipeline_maest`) are the model that ships to
the Hugging Face Hub; this package is everything a user runs on top of it. It imports the root modules as top-level
modules (`pip install .` installs them as such); they never import this package.

| module | concern |
| --- | --- |
| `cli` | exit-status convention, one-line errors, argparse value types, the `--block` option |
| `devices` | `--device` / `--dtype` resolution |
| `discovery` | finding audio files: the one extension list, folders, file lists |
| `features` | decoding a file into MAEST input frames; loading a model's feature extractor |
| `files` | atomic writes (temporary file, fsync, rename), file fingerprints and hashes |
| `records` | the tagger's records: JSONL journals, jsonl / csv / parquet outputs, merging |
| `labelled` | labelled audio (CSV or label folders), splits, validation metrics |
| `hub` | saving a loadable model folder (auto_map, custom pipelines, code files) and pushing it |
| `provenance`, `lock` | what made an output (sidecar `OUTPUT.meta.json`, resume checks); one run per output |
| `tag` | `maest-tag`: tag and embed a collection |
| `library` | maest-tag's music-library options: `--timeline`, `--genres`, `--write-tags`, `--remove-tags`, `--plots` |
| `timeline`, `genres` | the one label rule, window times; genre scores (max over styles) |
| `filetags` | MAEST tags written into audio files (mutagen), safely |
| `plot`, `plot_command` | a track's picture (matplotlib, Agg); `maest-plot` |
| `convert` | `maest-convert`: convert a release or published checkpoint, check it, publish it |
| `finetune` | `maest-finetune`: fine-tune on labelled audio |
| `probe` | `maest-probe`: MLP probe on frozen embeddings of one block |
| `export_onnx` | `maest-export-onnx`: one-window ONNX export and its runner |
"""
