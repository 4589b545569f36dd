"""Draw five example translations with their attention as heatmaps (docs/translation_attention.png).

    python docs/attention_heatmaps.py [--model-dir models/translate/2]

It runs the exported ONNX graphs with the same beam search the service uses, so the picture
is what POST /translate returns with "return_attention": true.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import onnxruntime as ort  # noqa: E402

from seqserve.manifest import Manifest, newest_version_dir  # noqa: E402
from seqserve.translation import SubwordCodec, beam_search, describe, prepare_source  # noqa: E402

DOCS = Path(__file__).resolve().parent
EXAMPLES = [
    "I have never been to Spain.",
    "Tom doesn't want to go to school tomorrow.",
    "Where did you buy that red umbrella?",
    "She has been living in Boston for three years.",
    "Zelda gave 42 apples to her grandmother.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--out", type=Path, default=DOCS / "translation_attention.png")
    args = parser.parse_args()
    model_dir = args.model_dir or newest_version_dir(DOCS.parent / "models" / "translate")
    manifest = Manifest.load(model_dir)
    sessions = {kind: ort.InferenceSession(str(model_dir / g.file), providers=["CPUExecutionProvider"])
                for kind, g in manifest.graphs.items()}
    codec = SubwordCodec.from_file(model_dir / manifest.preprocessing.tokenizer,
                                   manifest.preprocessing.max_source_tokens)
    sources = [prepare_source(codec, text) for text in EXAMPLES]
    hypotheses = beam_search(sessions["encoder"], sessions["decoder_step"], codec, [s.ids for s in sources],
                             args.beam_size)
    results = [describe(codec, source, hyp) for source, hyp in zip(sources, hypotheses)]

    figure, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.6))
    for axis, result in zip(axes, results):
        axis.imshow(result.attention, cmap="Greys", vmin=0, vmax=1, aspect="auto")
        axis.set_xticks(range(len(result.source_tokens)), result.source_tokens, rotation=70, fontsize=8)
        axis.set_yticks(range(len(result.target_tokens)), result.target_tokens, fontsize=8)
        axis.set_title(result.translation, fontsize=8, wrap=True)
    figure.suptitle(f"{manifest.id}: attention of each Spanish subword (rows) over the English ones (columns), "
                    f"beam {args.beam_size}", fontsize=10)
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(json.dumps([{"english": text, "spanish": r.translation} for text, r in zip(EXAMPLES, results)],
                     ensure_ascii=False, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
