"""Shared set-up of the TRL side-by-side scripts (trl_quickstart.py, trl_bench_step.py).

TRL's `GRPOTrainer` on rlpo's CPU quickstart task: SmolLM2-135M-Instruct from a local HF directory,
rlpo's synthetic single-digit arithmetic prompts in rlpo's order (scripts/rlpo_task.py), rlpo's
`math`/`last_number` reward, plain GRPO advantages (group mean and unbiased std), a clipped
token-level surrogate with ε_low = 0.2, ε_high = 0.28, token-mean aggregation (`loss_type="dapo"`),
no KL, AdamW with a constant learning rate and grad-norm clipping 1.0, one optimizer step per
generation batch. Needs scripts/requirements-bench.txt.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rlpo_task  # noqa: E402

DEFAULT_MODEL = ".cache/models/SmolLM2-135M-Instruct"


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def pin_threads(threads: int) -> int:
    """Pin OpenMP/MKL and torch's intra-op pool to `threads` (0 = the cores this process may use).

    Call before importing torch so that the environment variables take effect too.
    """
    n = threads if threads > 0 else machine_cores()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process
    return n


def quickstart_dataset(num_prompts: int, seed: int = 0):
    """The first `num_prompts` prompts rlpo's quickstart trains on, in rlpo's order."""
    from datasets import Dataset

    samples = rlpo_task.rlpo_order(rlpo_task.arithmetic_samples(seed=seed, size=1000), num_prompts, seed=seed)
    return Dataset.from_list([{"prompt": s["prompt"], "answer": s["answer"], "id": s["id"]} for s in samples])


class StageTimes:
    """Per-step wall-clock seconds of TRL's stages, filled by TimedGRPOTrainer and StepTimer."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.generate = 0.0  # transformers `generate` (prefill + decode), all rows
        self.generate_and_score = 0.0  # + prompt tokenization, decoding, reward, advantages
        self.training_step = 0.0  # + learner forward/backward of the loss
        self.completion_tokens = 0


def make_trainer(
    model_path: str,
    out_dir: str,
    *,
    steps: int,
    prompts_per_step: int,
    group_size: int,
    max_new_tokens: int,
    bf16: bool,
    seed: int = 0,
    lr: float = 1e-5,
    fixed_length: bool = False,
    gradient_checkpointing: bool = False,
    lora_rank: int = 0,
    callbacks=(),
):
    """A GRPOTrainer (subclass that records StageTimes in `trainer.stage_times`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        stage_times = StageTimes()

        def _generate_single_turn(self, *args, **kwargs):
            t = time.perf_counter()
            out = super()._generate_single_turn(*args, **kwargs)
            self.stage_times.generate += time.perf_counter() - t
            self.stage_times.completion_tokens += sum(len(c) for c in out[0])
            return out

        def _generate_and_score_completions(self, *args, **kwargs):
            t = time.perf_counter()
            out = super()._generate_and_score_completions(*args, **kwargs)
            self.stage_times.generate_and_score += time.perf_counter() - t
            return out

        def training_step(self, *args, **kwargs):
            t = time.perf_counter()
            out = super().training_step(*args, **kwargs)
            self.stage_times.training_step += time.perf_counter() - t
            return out

    rollouts = prompts_per_step * group_size
    generation_kwargs = {"min_new_tokens": max_new_tokens} if fixed_length else None
    args = GRPOConfig(
        output_dir=out_dir,
        # one generation batch of prompts_per_step x G completions = one optimizer step
        per_device_train_batch_size=rollouts,
        gradient_accumulation_steps=1,
        num_generations=group_size,
        max_steps=steps,
        num_iterations=1,
        shuffle_dataset=False,  # the dataset is already in rlpo's order
        seed=seed,
        data_seed=seed,
        # sampling
        max_completion_length=max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        generation_kwargs=generation_kwargs,
        use_vllm=False,
        # algorithm: GRPO advantages, clipped surrogate, token-mean over the batch, no KL
        beta=0.0,
        epsilon=0.2,
        epsilon_high=0.28,
        loss_type="dapo",
        scale_rewards="group",
        mask_truncated_completions=False,
        # optimizer: AdamW(0.9, 0.999, 1e-8), no weight decay, constant LR, no warm-up, clip 1.0
        learning_rate=lr,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=1.0,
        # machine and precision
        use_cpu=True,
        # TRL's GRPO default is True (recompute activations in the backward pass); rlpo keeps them,
        # and 135M parameters fit easily, so both sides keep them unless asked otherwise.
        gradient_checkpointing=gradient_checkpointing,
        bf16=bf16,
        fp16=False,
        dataloader_num_workers=0,
        # bookkeeping
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        log_completions=False,
        remove_unused_columns=False,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    dataset = quickstart_dataset(steps * prompts_per_step, seed=seed)
    peft_config = None
    if lora_rank > 0:
        # PEFT LoRA on every projection, alpha = 2r, no dropout: what `rlpo bench step --lora-rank` runs.
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=lora_rank,
            lora_alpha=2 * lora_rank,
            lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            task_type="CAUSAL_LM",
        )
    trainer = TimedGRPOTrainer(
        model=model,
        reward_funcs=[rlpo_task.math_last_number_reward],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=list(callbacks),
        peft_config=peft_config,
    )
    # our callbacks print one line per step; drop the Trainer's dict printer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def step_timer_callback(on_step):
    """A TrainerCallback that times each optimizer step (on_step_begin to on_step_end) and calls
    `on_step(step, step_s, elapsed_s, stage_times, logs)` once the step's logs (reward) are known."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.trainer = None
            self.t_train = None
            self.t_step = None
            self.pending = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.t_train = time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            self.trainer.stage_times.reset()
            self.t_step = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            st = self.trainer.stage_times
            self.pending = {
                "step": state.global_step,
                "step_s": now - self.t_step,
                "elapsed_s": now - self.t_train,
                "stages": {
                    "generate_s": st.generate,
                    "score_s": st.generate_and_score - st.generate,
                    "loss_fwd_bwd_s": st.training_step - st.generate_and_score,
                    "optim_s": (now - self.t_step) - st.training_step,
                },
                "completion_tokens": st.completion_tokens,
            }

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.pending is None or not logs or "reward" not in logs:
                return
            p, self.pending = self.pending, None
            on_step(p, logs)

    return StepTimer()
