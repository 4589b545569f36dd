"""Training pipeline: data -> tokenizer -> model -> train -> export -> evaluate.

One package per task (`sentiment`, `music`, `translate`), each with its config, data, model,
train, export and evaluate modules; nothing in one task's package imports another's. What
they share is here: `config` (typed TOML configs), `fetch` and `splits` (data), `tokenizer`,
`recurrent` (layers), `batching`, `loop` and `checkpoints` (the one training loop),
`onnx_export` and `versions` (exporting a model version). `python -m training --help` lists
the steps; torch is imported only by the steps that need it.
"""
