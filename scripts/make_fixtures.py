"""Write the golden fixtures rlpo's Rust tests compare against, with Hugging Face transformers as the
independent oracle. Nothing is downloaded.

Output (default .cache/fixtures, made by scripts/setup.sh):
  tokenizer/                     a tiny byte-level BPE tokenizer trained here (deterministic) with a
                                 Qwen-style <|im_start|> chat template carrying a system message
  <model>/                       tiny random-init HF model directories (config.json, model.safetensors,
                                 tokenizer files, generation_config.json), one per architecture variant
  <model>/reference.safetensors  inputs and transformers' fp32 logits for a right-padded and a
                                 left-padded batch of 3 prompts, and one 40-token sequence
  smollm2_reference.safetensors  the same for SmolLM2-135M-Instruct (when converted)
  smollm2_reference.json         greedy generate() ids, tokenizer ids for tricky strings, chat
                                 template renderings (SmolLM2 and the tiny Qwen-style template)

usage: python scripts/make_fixtures.py --out DIR [--smollm2 DIR]
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

QWEN_STYLE_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message.role == 'system' and loop.first %}\n"
    "    {%- elif message.role in ['user', 'assistant'] %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content | trim + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('unsupported role: ' + message.role) }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

CORPUS = [
    "What is 3 + 4? The answer is 7.",
    "Compute 12 * 5 = 60. Then 60 - 17 = 43.",
    "The quick brown fox jumps over the lazy dog.",
    "Let me think step by step. First, add the numbers; then check the result.",
    "<think>7 + 8 = 15</think> The answer is \\boxed{15}.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000",
]

STRINGS = [
    "Hello, world!",
    "What is 7 + 5? Answer with just the number.",
    "   leading spaces and trailing   ",
    "tabs\tand\nnewlines\n\n\nmany",
    "digits 1234567890 and 3.14159 and -42",
    "unicode: café naïve Zürich Ελληνικά русский 中文 日本語",
    "emoji: 😀🚀👍🏽 family 👨‍👩‍👧",
    "<|im_start|>user\nhi<|im_end|>",
    "special <|endoftext|> in the middle",
    "\\boxed{\\frac{1}{2}}",
    "x" * 50,
    "a\r\nb",
    "",
    " ",
    "\n",
    "don't won't it's",
    "CamelCaseIdentifier snake_case_identifier",
    "https://example.com/path?query=1&b=2",
    "#### 1,000",
    "def f(x):\n    return x ** 2\n",
    "  \n  \t  ",
    "1+1=2, 2*3=6, 10/4=2.5",
    "Ünïcödé ñ ß ø å",
    "<think>reasoning</think>answer",
]

CONVERSATIONS = [
    ([{"role": "user", "content": "What is 2 + 3?"}], True),
    ([{"role": "user", "content": "What is 2 + 3?"}], False),
    (
        [
            {"role": "system", "content": "You are a careful math tutor."},
            {"role": "user", "content": "Solve 12 * 7."},
        ],
        True,
    ),
    (
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "  Hi there  "},
            {"role": "assistant", "content": "Hello! "},
            {"role": "user", "content": "Bye\n"},
        ],
        True,
    ),
]


def train_tiny_tokenizer(out: str) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = QWEN_STYLE_TEMPLATE
    fast.save_pretrained(out)
    return fast


def randomise_(model: torch.nn.Module, seed: int) -> None:
    """Random weights large enough that logits differ clearly between tokens (HF's init std 0.02 would
    make every logit nearly 0 and the parity test weak); norms around 1, biases non-zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5))


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    # Same convention as HF generate() and rlpo: positions count valid tokens only.
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def padded_batch(lengths, vocab, pad_id, left, seed):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.full((len(lengths), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(lengths), T), dtype=torch.long)
    for i, n in enumerate(lengths):
        row = torch.randint(3, vocab, (n,), generator=g)
        if left:
            ids[i, T - n :] = row
            mask[i, T - n :] = 1
        else:
            ids[i, :n] = row
            mask[i, :n] = 1
    return ids, mask


@torch.no_grad()
def reference_logits(model, ids, mask):
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    return out.logits.float().contiguous()


def write_reference(model, vocab: int, pad_id: int, path: str, seed: int, lengths=(5, 9, 7)) -> None:
    tensors = {}
    for side, left in (("right", False), ("left", True)):
        ids, mask = padded_batch(list(lengths), vocab, pad_id, left, seed)
        tensors[f"{side}_input_ids"] = ids
        tensors[f"{side}_attention_mask"] = mask
        tensors[f"{side}_logits"] = reference_logits(model, ids, mask)
    g = torch.Generator().manual_seed(seed + 1)
    seq = torch.randint(3, vocab, (1, 40), generator=g)
    tensors["seq_input_ids"] = seq
    tensors["seq_logits"] = reference_logits(model, seq, torch.ones_like(seq))
    save_file(tensors, path)


def tiny_models(tok_dir: str):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    V = len(tok)
    common = dict(
        vocab_size=V,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        bos_token_id=None,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
    )
    yield "tiny-llama-tied", LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True, rope_theta=10000.0)), None
    cfg = dict(common, hidden_size=96, head_dim=16, num_hidden_layers=3)
    llama3 = LlamaConfig(
        **cfg,
        tie_word_embeddings=False,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    )
    yield "tiny-llama3-rope-untied", LlamaForCausalLM(llama3), "legacy_rope"
    yield "tiny-qwen2", Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=False, rope_theta=1000000.0)), None
    yield "tiny-qwen2-tied", Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True)), None
    q3 = Qwen3Config(**dict(common, head_dim=32), tie_word_embeddings=True, rope_theta=1000000.0)
    yield "tiny-qwen3", Qwen3ForCausalLM(q3), None


def legacy_rope_config(path: str) -> None:
    """Rewrite rope_parameters as the older `rope_theta` + `rope_scaling` keys, which many checkpoints
    on disk still use, so both spellings are covered by a fixture."""
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp.pop("rope_theta")
    cfg["rope_scaling"] = rp
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


def make_tiny(out: str) -> None:
    tok_dir = os.path.join(out, "tokenizer")
    tok = train_tiny_tokenizer(tok_dir)
    for i, (name, model, quirk) in enumerate(tiny_models(tok_dir)):
        d = os.path.join(out, name)
        randomise_(model, seed=100 + i)
        model.eval()
        model.save_pretrained(d, safe_serialization=True)
        tok.save_pretrained(d)
        if quirk == "legacy_rope":
            legacy_rope_config(os.path.join(d, "config.json"))
        # The oracle is transformers loading what is on disk, exactly as a user's checkpoint would be.
        reloaded = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        write_reference(reloaded, model.config.vocab_size, tok.pad_token_id, os.path.join(d, "reference.safetensors"), seed=7 + i)
        print(f"fixture {name}: {sum(p.numel() for p in model.parameters())} parameters")


def make_smollm2(out: str, smol: str) -> None:
    tok = AutoTokenizer.from_pretrained(smol)
    model = AutoModelForCausalLM.from_pretrained(smol, dtype=torch.float32).eval()
    prompts = [
        "What is 7 + 5?",
        "Write a short haiku about the sea and the wind, please.",
        "List three prime numbers greater than ten, and explain why each of them is prime.",
    ]
    rendered = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) for p in prompts]
    encoded = [tok(r, add_special_tokens=False)["input_ids"] for r in rendered]
    T = max(len(e) for e in encoded)
    ids = torch.full((3, T), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((3, T), dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, T - len(e) :] = torch.tensor(e)
        mask[i, T - len(e) :] = 1
    tensors = {"left_input_ids": ids, "left_attention_mask": mask, "left_logits": reference_logits(model, ids, mask)}
    greedy = []
    for e in encoded:
        x = torch.tensor([e])
        gen = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
        greedy.append(gen[0, len(e) :].tolist())
    save_file(tensors, os.path.join(out, "smollm2_reference.safetensors"))

    tiny_tok = AutoTokenizer.from_pretrained(os.path.join(out, "tokenizer"))
    ref = {
        "prompts": prompts,
        "prompt_ids": encoded,
        "greedy_32": greedy,
        "tokenize": [{"text": s, "ids": tok(s)["input_ids"]} for s in STRINGS],
        "tokenize_tiny": [{"text": s, "ids": tiny_tok(s)["input_ids"]} for s in STRINGS],
        "decode": [{"ids": g, "text": tok.decode(g)} for g in greedy],
        "chat_smollm2": [
            {"messages": m, "add_generation_prompt": a, "text": tok.apply_chat_template(m, tokenize=False, add_generation_prompt=a)}
            for m, a in CONVERSATIONS
        ],
        "chat_qwen_style": [
            {"messages": m, "add_generation_prompt": a, "text": tiny_tok.apply_chat_template(m, tokenize=False, add_generation_prompt=a)}
            for m, a in CONVERSATIONS
        ],
    }
    with open(os.path.join(out, "smollm2_reference.json"), "w") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
    print("fixture smollm2 reference written")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--smollm2", default=None, help="converted SmolLM2 HF directory (optional)")
    args = ap.parse_args()
    torch.manual_seed(0)
    tmp = args.out + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    make_tiny(tmp)
    if args.smollm2:
        make_smollm2(tmp, args.smollm2)
    if os.path.exists(args.out):
        import shutil

        shutil.rmtree(args.out)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
