#!/usr/bin/env python3
"""Python side of scripts/gpu_check.sh (transformers as the oracle). Subcommands:

  lib-path     LD_LIBRARY_PATH entries for the bundled binary: torch's lib/ and every
               nvidia/*/lib folder of the wheel's CUDA packages (cuBLAS, cuDNN, NCCL, ...)
  env          torch / transformers versions and the GPU; exits 3 when transformers is missing
  make-model   a random-init model from a config alone (no hub): Qwen2.5-1.5B's shape or a tiny
               one, saved as safetensors (bf16) with the fixture tokenizer
  parity       rlpo's logits (`rlpo debug logits`, full forward and cached decode) vs transformers
               on the same device: f32 max |diff| <= 1e-3, bf16 relative L2 <= 5e-2
  derive-recipe  recipes/d3s_qwen.toml with the built-in synthetic arithmetic data instead of GSM8K
  sdpa-probe   which fused SDPA kernels accept rlpo's learner/prefill call (is_causal, no mask,
               GQA) and, for comparison, the boolean-mask one-token decode call rlpo avoids
  summary      the table: rollout tokens/s rlpo vs HF (warm-up and steady state), learner tokens/s
               and MFU, step seconds per stage, peak memory vs the plan, the issue's goals

Every check prints `PASS name ...` or `FAIL name ...`; the exit status is 1 when one failed.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

QWEN25_15B = dict(
    architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=1536, num_hidden_layers=28,
    num_attention_heads=12, num_key_value_heads=2, intermediate_size=8960, vocab_size=151936,
    tie_word_embeddings=True, rope_theta=1000000.0, max_position_embeddings=4096, rms_norm_eps=1e-6,
    hidden_act="silu", use_sliding_window=False, sliding_window=None, max_window_layers=28,
    attention_dropout=0.0, initializer_range=0.02,
)
# Same family and flags, small enough for the CPU dry run.
TINY = dict(QWEN25_15B, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=1024)


def say(status, name, msg):
    print(f"{status} {name}: {msg}", flush=True)


def cmd_lib_path(a):
    import glob
    import torch

    torch_dir = os.path.dirname(torch.__file__)
    site = os.path.dirname(torch_dir)
    dirs = [os.path.join(torch_dir, "lib")] + sorted(d for d in glob.glob(os.path.join(site, "nvidia", "*", "lib")) if os.path.isdir(d))
    print(":".join(dirs))
    return 0


def cmd_env(a):
    import torch
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), cuda available: {torch.cuda.is_available()}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(f"gpu 0: {p.name}, {p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}")
    try:
        import transformers
    except ImportError as e:
        print(f"transformers is not importable ({e}): the oracle checks need it "
              f"(pip install transformers, or set PYTHON to an interpreter that has it)")
        return 3
    print(f"transformers {transformers.__version__}")
    if not torch.__version__.startswith("2.11."):
        print(f"warning: rlpo links LibTorch 2.11.0; this torch is {torch.__version__} (ABI mismatch likely)")
    return 0


def cmd_make_model(a):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from tokenizers import Tokenizer

    os.makedirs(a.out, exist_ok=True)
    tok = Tokenizer.from_file(os.path.join(a.tokenizer, "tokenizer.json"))
    eos = tok.token_to_id("<|im_end|>")
    pad = tok.token_to_id("<|endoftext|>")
    shape = dict(QWEN25_15B if a.shape == "qwen2.5-1.5b" else TINY)
    shape.update(eos_token_id=eos, pad_token_id=pad, bos_token_id=None)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(shape, f, indent=2)
    cfg = AutoConfig.from_pretrained(a.out)
    t0 = time.time()
    torch.manual_seed(0)
    with torch.device(a.device):
        model = AutoModelForCausalLM.from_config(cfg)
    model = model.to(torch.bfloat16)
    w = model.get_input_embeddings().weight
    if not (w.float().std().item() > 0):
        raise SystemExit("make-model: the random init left the embeddings at zero")
    model.save_pretrained(a.out)
    # Tokenizer: the fixture BPE (its ids are < the model's vocabulary, which is all random weights
    # need), with a tokenizer_config that transformers 4.x and 5.x both read.
    shutil.copy(os.path.join(a.tokenizer, "tokenizer.json"), a.out)
    template = open(os.path.join(a.tokenizer, "chat_template.jinja")).read()
    shutil.copy(os.path.join(a.tokenizer, "chat_template.jinja"), a.out)
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
                   "pad_token": "<|endoftext|>", "chat_template": template, "model_max_length": 4096}, f, indent=2)
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": eos, "pad_token_id": pad}, f)
    n = sum(p.numel() for p in model.parameters())
    print(f"make-model: {a.shape} ({n / 1e6:.1f}M parameters, bf16) in {a.out} ({time.time() - t0:.1f} s)")
    return 0


def hf_logits(model_dir, ids, mask, device, dtype):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).to(device=device, dtype=dtype).eval()
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device)).logits
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out.float().cpu()


def cmd_parity(a):
    import torch
    from safetensors.torch import load_file, save_file

    device = torch.device(a.device)
    os.makedirs(a.work, exist_ok=True)
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    g = torch.Generator().manual_seed(1)
    b, t, p = 3, a.seq, a.seq * 2 // 3
    ids = torch.randint(3, min(cfg["vocab_size"], 50000), (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, :7] = 0  # a left-padded row (padding only in the prefill part)
    mask[2, :p - 1] = 0
    ids = ids * mask
    inputs = os.path.join(a.work, "parity_inputs.safetensors")
    save_file({"input_ids": ids, "attention_mask": mask}, inputs)
    real = mask.bool()  # compare real positions only (pad rows of transformers may hold NaN)
    failed = 0
    ref32 = None
    for dtype_name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        out = os.path.join(a.work, f"parity_rlpo_{dtype_name}.safetensors")
        cmd = [a.rlpo, "debug", "logits", "--model", a.model, "--inputs", inputs, "--out", out,
               "--device", a.device, "--dtype", dtype_name, "--decode-from", str(p), "--decoder", a.decoder]
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            say("FAIL", f"parity-{dtype_name}", f"rlpo debug logits exited {r.returncode}: {r.stderr.strip()[-2000:]}")
            failed += 1
            continue
        rl = load_file(out)
        t_rlpo = time.time() - t0
        t0 = time.time()
        hf = hf_logits(a.model, ids, mask, device, dtype)
        if dtype_name == "f32":
            ref32 = hf
        t_hf = time.time() - t0
        full, dec = rl["logits"], rl["decode_logits"]
        hf_tail = hf[:, p - 1:]
        if dtype_name == "f32":
            d_full = (full[real] - hf[real]).abs().max().item()
            d_dec = (dec - hf_tail).abs().max().item()
            ok = d_full <= 1e-3 and d_dec <= 1e-3
            say("PASS" if ok else "FAIL", "parity-f32",
                f"max |rlpo - transformers| full forward {d_full:.2e}, cached decode ({a.decoder}) {d_dec:.2e} "
                f"(tolerance 1e-3; logits scale {hf.abs().max().item():.2f}; rlpo {t_rlpo:.1f} s, HF {t_hf:.1f} s)")
        else:
            def rel(x, y):
                return ((x - y).norm() / y.norm()).item()

            r_full = rel(full[real], hf[real])
            r_dec = rel(dec, hf_tail)
            r32 = rel(full[real], ref32[real]) if ref32 is not None else float("nan")
            hf32 = rel(hf[real], ref32[real]) if ref32 is not None else float("nan")
            ok = r_full <= 5e-2 and r_dec <= 5e-2
            say("PASS" if ok else "FAIL", "parity-bf16",
                f"relative L2 |rlpo - transformers| full forward {r_full:.2e}, cached decode ({a.decoder}) {r_dec:.2e} "
                f"(tolerance 5e-2); vs f32 reference: rlpo {r32:.2e}, transformers {hf32:.2e}")
        failed += 0 if ok else 1
    return 1 if failed else 0


def cmd_derive_recipe(a):
    """recipes/d3s_qwen.toml with its GSM8K parquet swapped for the built-in synthetic arithmetic
    task (the recipe's own comment says how: source = "synthetic", drop `path`, add a
    [data.synthetic] table); every other key is kept, and `--set` does the rest."""
    out, section = [], None
    for line in open(a.recipe):
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped.strip("[] ").split("]")[0]
        if section == "data" and stripped.startswith("source"):
            line = 'source = "synthetic"                # gpu_check: built-in arithmetic instead of GSM8K\n'
        elif section == "data" and stripped.startswith("path"):
            continue
        out.append(line)
    out.append('\n[data.synthetic]                    # gpu_check\ntask = "arithmetic"\n')
    with open(a.out, "w") as f:
        f.writelines(out)
    print(f"derive-recipe: {a.recipe} -> {a.out} (synthetic arithmetic data)")
    return 0


def cmd_sdpa_probe(a):
    """Which SDPA kernels take rlpo's calls on this card, bf16: the learner / prefill call
    (q [B,H,T,hd], k/v [B,H_kv,T,hd], is_causal=True, no mask, enable_gqa, with backward), and for
    comparison the one-token decode call with a boolean mask that rlpo does not make (its decode
    steps use a grouped baddbmm over the cache instead)."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev = torch.device(a.device)
    if dev.type != "cuda":
        print("sdpa-probe: CPU device, nothing to probe")
        return 0
    b, h, kv, hd = 8, 12, 2, 128
    cases = (("learner/prefill T=1024, is_causal, no mask", 1024, 1024, False),
             ("decode 1 query, S=1024, bool mask (not used by rlpo)", 1, 1024, True))
    for label, tq, tk, masked in cases:
        grad = tq > 1
        q = torch.randn(b, h, tq, hd, device=dev, dtype=torch.bfloat16, requires_grad=grad)
        k = torch.randn(b, kv, tk, hd, device=dev, dtype=torch.bfloat16, requires_grad=grad)
        v = torch.randn(b, kv, tk, hd, device=dev, dtype=torch.bfloat16, requires_grad=grad)
        mask = torch.ones(b, 1, tq, tk, device=dev, dtype=torch.bool).tril(diagonal=tk - tq) if masked else None
        res = []
        for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                         ("cudnn", SDPBackend.CUDNN_ATTENTION), ("math", SDPBackend.MATH)):
            try:
                with sdpa_kernel([be]):
                    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=not masked, enable_gqa=True)
                    if grad:
                        y.sum().backward()
                res.append(f"{name} ok")
            except Exception as e:  # noqa: BLE001 - the point is to see which kernels refuse
                res.append(f"{name} refused ({str(e).splitlines()[0][:60]})")
        print(f"INFO sdpa {label}: " + "; ".join(res))
    return 0


def _metrics(path):
    rows = []
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line:
                rows.append(json.loads(line)["metrics"])
    return rows


def _first_float(path, key):
    if not os.path.exists(path):
        return None
    for line in open(path):
        if key in line:
            for tok in line.replace(",", " ").split():
                try:
                    return float(tok)
                except ValueError:
                    pass
    return None


def _json(path):
    if not os.path.exists(path):
        return None
    lines = [x for x in open(path) if x.startswith("{")]
    try:
        return json.loads(lines[-1]) if lines else None
    except ValueError:
        return None


def cmd_summary(a):
    w = a.work
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    d, L, v, i = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"], cfg["intermediate_size"]
    hd = d // cfg["num_attention_heads"]
    n_params = L * (2 * d * d + 2 * d * cfg["num_key_value_heads"] * hd + 3 * d * i) + v * d  # matmul params
    # Dense bf16 tensor-core peaks (spec sheets, no sparsity); unknown cards use the measured ceiling.
    peak_spec = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12,
                 "L40S": 362e12, "B200": 2250e12}
    gpu = a.gpu_name or "cpu"
    peak = next((f for k, f in peak_spec.items() if k in gpu), None)
    rl, hf = _json(os.path.join(w, "bench_rlpo.json")), _json(os.path.join(w, "bench_hf.json"))
    ceiling = (rl or {}).get("matmul_flops")
    basis_peak = peak or ceiling
    lines = [f"GPU check summary ({gpu}; model {a.model}: {n_params / 1e9:.2f}B matmul parameters)", ""]
    goals = []

    lines.append(f"| rollout, batch {a.batch} x {a.new_tokens} new tokens, {(rl or hf or {}).get('dtype', '?')} | warm-up s | steady s | tokens/s | vs HF |")
    lines.append("| --- | ---: | ---: | ---: | ---: |")
    def row(name, r, ratio):
        if not r:
            return f"| {name} | n/a | n/a | n/a | |"
        return f"| {name} | {r.get('warmup_s', float('nan')):.2f} | {r['seconds']:.2f} | {r['tokens_per_s']:.0f} | {ratio} |"
    lines.append(row("transformers generate", hf, "1.00x" if hf else ""))
    ratio = rl["tokens_per_s"] / hf["tokens_per_s"] if (rl and hf) else None
    sampler = "device sampling" if (rl or {}).get("device_sampling") else "host sampling"
    lines.append(row(f"rlpo fast decoder ({sampler})", rl, f"{ratio:.2f}x" if ratio else "n/a"))
    if rl:
        lines.append(f"\nrlpo decode step: {rl['ms_per_step']:.2f} ms (forward + sampling, {rl.get('syncs', 0)} reads of sampled "
                     f"tokens); prefill {rl['prefill_s']:.2f} s")
    goals.append(("rollout >= 3x transformers generate", f"{ratio:.2f}x" if ratio else "n/a", ratio is not None and ratio >= 3.0))

    lines += ["", "| learner (bench learner) | rows x tokens, dtype | step s | tokens/s | MFU |", "| --- | --- | ---: | ---: | ---: |"]
    best_mfu = None
    for ck in ("off", "on"):
        r = _json(os.path.join(w, f"bench_learner_ckpt_{ck}.json"))
        if not r:
            lines.append(f"| activation checkpointing {ck} | n/a | n/a | n/a | n/a |")
            continue
        mfu = r["flops_per_token"] * r["tokens_per_s"] / basis_peak if basis_peak else r["mfu"]
        if ck == "off":
            best_mfu = mfu
        lines.append(f"| activation checkpointing {ck} | {r['rows']} x {r['seq']}, {r['dtype']} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | {mfu * 100:.1f} % |")
    goals.append(("learner MFU >= 40 % (bf16)", f"{best_mfu * 100:.1f} %" if best_mfu else "n/a", best_mfu is not None and best_mfu >= 0.40))

    prompt_len = a.prompt_len
    plan = os.path.join(w, "check.txt")
    if os.path.exists(plan):
        measured = _first_float(plan, "prompt length")
        prompt_len = int(measured) if measured else prompt_len
    rows = _metrics(os.path.join(w, "train_run", "metrics.jsonl"))
    lines += ["", f"training: {len(rows)} step(s) of recipes/d3s_qwen.toml (data: synthetic arithmetic)", ""]
    if rows:
        keys = ["timing/rollout_s", "timing/reward_s", "timing/old_logprob_s", "timing/plan_s",
                "timing/update_s", "timing/step_s"]
        lines.append("| step | " + " | ".join(k.split("/")[1] for k in keys) + " | rollout tok/s | update MFU |")
        lines.append("|" + " --- |" * (len(keys) + 3))
        for n, r in enumerate(rows, 1):
            cells = [f"{r[k]:.2f}" if isinstance(r.get(k), (int, float)) else "n/a" for k in keys]
            rt = r.get("perf/rollout_tokens_per_s")
            # Update FLOPs ~ 6 · N · tokens forwarded (kept rows × (prompt + mean response)).
            tok = (r.get("select/kept_rows") or 0) * ((r.get("response/length_mean") or 0) + prompt_len)
            upd = r.get("timing/update_s") or 0
            mfu = 6 * n_params * tok / upd / basis_peak if (upd and basis_peak) else None
            cells.append(f"{rt:.0f}" if rt else "n/a")
            cells.append(f"{mfu * 100:.1f} %" if mfu else "n/a")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    mem = os.path.join(w, "gpu_mem_train.log")
    measured_gib = None
    if os.path.exists(mem):
        vals = [float(x) for x in open(mem).read().split() if x.replace(".", "").isdigit()]
        if vals:
            measured_gib = max(vals) / 1024
    plan_gib = _first_float(plan, "peak per device") if os.path.exists(plan) else None
    if measured_gib is not None or plan_gib is not None:
        m = f"{measured_gib:.2f} GiB" if measured_gib is not None else "n/a"
        p = f"{plan_gib:.2f} GiB" if plan_gib is not None else "n/a"
        rel = (measured_gib - plan_gib) / plan_gib if (measured_gib is not None and plan_gib) else None
        lines.append(f"\npeak GPU memory during training: measured {m} (nvidia-smi, whole GPU), rlpo check plan {p}"
                     + (f", measured/plan - 1 = {rel * 100:+.1f} %" if rel is not None else ""))
        goals.append(("peak memory within 10 % of the plan", f"{rel * 100:+.1f} %" if rel is not None else "n/a",
                      rel is not None and abs(rel) <= 0.10))
    times = os.path.join(w, "times.txt")
    if os.path.exists(times):
        parts = [l.split() for l in open(times) if l.startswith("part:")]
        if parts:
            lines.append("\nelapsed per part: " + ", ".join(f"{p[0][5:]} {p[1]} s" for p in parts if len(p) == 2))
    basis = f"spec bf16 dense peak {peak / 1e12:.0f} TFLOP/s" if peak else (
        f"measured {(rl or {}).get('dtype', '?')} matmul ceiling {ceiling / 1e12:.1f} TFLOP/s" if ceiling else "no peak known")
    lines.append(f"MFU basis: {basis}; learner FLOPs per token 6·N + 6·L·T·H·hd; training update tokens ~ kept rows x "
                 f"(mean response + {prompt_len} prompt tokens)")
    lines += ["", "| goal (issue 19) | measured | met |", "| --- | ---: | --- |"]
    for g, m, ok in goals:
        lines.append(f"| {g} | {m} | {'yes' if ok else 'no'} |")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(w, "summary.md"), "w") as f:
        f.write(text + "\n")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env")
    sub.add_parser("lib-path")
    p = sub.add_parser("make-model")
    p.add_argument("--out", required=True)
    p.add_argument("--shape", choices=["qwen2.5-1.5b", "tiny"], default="qwen2.5-1.5b")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--device", default="cpu")
    p = sub.add_parser("parity")
    p.add_argument("--model", required=True)
    p.add_argument("--rlpo", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--decoder", default="plain")
    p.add_argument("--seq", type=int, default=48)
    p.add_argument("--work", required=True)
    p = sub.add_parser("derive-recipe")
    p.add_argument("--recipe", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("sdpa-probe")
    p.add_argument("--device", default="cuda:0")
    p = sub.add_parser("summary")
    p.add_argument("--work", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--gpu-name", default="")
    p.add_argument("--prompt-len", type=int, default=60, help="used when check.txt has no measured prompt length")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=512)
    a = ap.parse_args()
    fn = {"env": cmd_env, "lib-path": cmd_lib_path, "make-model": cmd_make_model, "parity": cmd_parity, "derive-recipe": cmd_derive_recipe,
          "sdpa-probe": cmd_sdpa_probe, "summary": cmd_summary}[a.cmd]
    sys.exit(fn(a))


if __name__ == "__main__":
    main()
