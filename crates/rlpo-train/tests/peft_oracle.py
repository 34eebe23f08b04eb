"""Oracle for crates/rlpo-train/tests/lora.rs: load the base model with transformers, apply the
adapter directory rlpo wrote with peft, and compare the logits with rlpo's.

usage: peft_oracle.py BASE_DIR ADAPTER_DIR DATA.safetensors [MERGED_DIR]

DATA holds `ids` [B, T] (i64) and `logits` [B, T, V] (f32, rlpo's forward with the adapters).
Exits 1 when peft's logits differ from rlpo's by more than 1e-5, or when the adapters do not
change the logits (the base alone within 1e-3 of rlpo's: the check would prove nothing). With
MERGED_DIR (rlpo's merged export), that model's logits must match rlpo's within 1e-4.
"""
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

torch.manual_seed(0)
base_dir, adapter_dir, data_path = sys.argv[1:4]
merged_dir = sys.argv[4] if len(sys.argv) > 4 else None
data = load_file(data_path)
ids, want = data["ids"], data["logits"].double()


def logits(model):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.double()


base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32, attn_implementation="eager")
base.eval()
base_diff = (logits(base) - want).abs().max().item()
model = PeftModel.from_pretrained(base, adapter_dir)
model.eval()
n_lora = sum(1 for n, _ in model.named_parameters() if "lora_" in n)
peft_diff = (logits(model) - want).abs().max().item()
print(f"lora tensors {n_lora}; max |peft - rlpo| = {peft_diff:.3e}; max |base - rlpo| = {base_diff:.3e}")
ok = peft_diff <= 1e-5 and base_diff > 1e-3 and n_lora > 0
if merged_dir:
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, torch_dtype=torch.float32, attn_implementation="eager")
    merged.eval()
    merged_diff = (logits(merged) - want).abs().max().item()
    print(f"max |merged export - rlpo| = {merged_diff:.3e}")
    ok = ok and merged_diff <= 1e-4
sys.exit(0 if ok else 1)
