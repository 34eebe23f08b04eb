"""Independent oracle for tests: load an HF model directory with transformers and write its fp32
logits for the given inputs (input_ids, attention_mask in a safetensors file), with positions that
count real tokens only (as transformers' generate() and rlpo do).

usage: python scripts/logits_oracle.py --model DIR --inputs IN.safetensors --out OUT.safetensors
"""
import argparse

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    x = load_file(args.inputs)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    mask = x["attention_mask"]
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=x["input_ids"], attention_mask=mask, position_ids=pos).logits.float()
    save_file({"logits": logits.contiguous()}, args.out)


if __name__ == "__main__":
    main()
