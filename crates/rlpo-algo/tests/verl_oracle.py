"""Reference oracle for the verl parity suite (crates/rlpo-algo/tests/verl_parity.rs).

Reads {"cases": [...]} as JSON on stdin and writes {"results": [...]} on stdout, one result per
case, in order. Every number comes from verl 0.9.1's own functions (installed in the project's
venv by scripts/setup.sh), evaluated in float64 with torch autograd:

- advantages: core_algos.compute_{grpo,rloo,reinforce_plus_plus_baseline}_outcome_advantage;
- policy losses: core_algos.compute_policy_loss_{vanilla,gspo,cispo}, called once per
  micro-batch with the global batch info of the whole mini-batch (as verl's actor does), plus
  core_algos.kl_penalty + core_algos.agg_loss for the KL term; value and d(loss)/d(log_prob);
- DAPO overlong penalty: workers.reward_manager.dapo.DAPORewardManager;
- rollout correction: rollout_corr_helper.compute_rollout_correction_and_rejection_mask.

The Rust test starts this script once per run (importing verl takes seconds) and sends every case
in one request.
"""

import json
import sys
from types import SimpleNamespace

import numpy as np
import torch

from verl import DataProto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_rejection_mask
from verl.workers.config.actor import ActorConfig
from verl.workers.reward_manager.dapo import DAPORewardManager

F64 = torch.float64


def t(x):
    return torch.tensor(x, dtype=F64)


def groups(n, g):
    return np.array([i // g for i in range(n)])


def outcome_rewards(rewards, mask):
    # verl puts the outcome reward on one position of the row and sums over positions.
    r = torch.zeros_like(mask)
    r[:, 0] = rewards
    return r


def advantage(case):
    rewards, mask = t(case["rewards"]), t(case["mask"])
    index = groups(mask.shape[0], case["g"])
    fam = case["family"]
    if fam in ("grpo", "dr_grpo"):
        adv, _ = core_algos.compute_grpo_outcome_advantage(
            outcome_rewards(rewards, mask), mask, index, epsilon=case["eps"], norm_adv_by_std_in_grpo=fam == "grpo"
        )
    elif fam == "rloo":
        adv, _ = core_algos.compute_rloo_outcome_advantage(outcome_rewards(rewards, mask), mask, index)
    elif fam == "rfpp_baseline":
        adv, _ = core_algos.compute_reinforce_plus_plus_baseline_outcome_advantage(outcome_rewards(rewards, mask), mask, index)
    else:
        raise ValueError(fam)
    return {"adv": adv.tolist()}


def actor_config(case, info):
    cfg = ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=case["clip_low"],
        clip_ratio_low=case["clip_low"],
        clip_ratio_high=case["clip_high"],
        clip_ratio_c=case.get("clip_c", 3.0),
        loss_agg_mode=case["agg"],
    )
    cfg.global_batch_info.update(info)  # verl mutates the dict the same way (workers/utils/losses.py)
    return cfg


def policy_value_and_grad(case, old, logp0, adv, mask, weights=None):
    """Sum over micro-batches of verl's policy loss (+ β·KL), and its gradient w.r.t. log_prob."""
    logp = logp0.clone().requires_grad_(True)
    n = mask.shape[0]
    nonempty = float((mask.sum(-1) > 0).sum())
    info = {
        "dp_size": 1,
        "batch_num_tokens": float(mask.sum()),
        "global_batch_size": float(n) if case.get("rows") == "all" else nonempty,
        "loss_scale_factor": case.get("loss_scale_factor"),
    }
    cfg = actor_config(case, info)
    loss_fn = core_algos.get_policy_loss_fn(case["loss_mode"])
    kl = case.get("kl")
    total = torch.zeros((), dtype=F64)
    for start, length in case["micro"]:
        sl = slice(start, start + length)
        w = None if weights is None else weights[sl]
        pg, _ = loss_fn(old[sl], logp[sl], adv[sl], mask[sl], case["agg"], cfg, w)
        total = total + pg
        if kl is not None:
            kld = core_algos.kl_penalty(logp[sl], t(kl["ref"])[sl], kl["type"])
            total = total + kl["coef"] * core_algos.agg_loss(kld, mask[sl], case["agg"], **info)
    total.backward()
    return {"value": total.item(), "grad": logp.grad.tolist()}


def policy(case):
    mask = t(case["mask"])
    adv = t(case["adv"]).unsqueeze(-1) * mask
    return policy_value_and_grad(case, t(case["old"]), t(case["logp"]), adv, mask)


def rollout_corr(case):
    old, rollout, mask = t(case["old"]), t(case["rollout"]), t(case["mask"])
    upper, lower = case["upper"], case["lower"]
    rs = None
    if case["mode"] == "mask":
        # verl's k1 bounds apply to -log ratio, i.e. to 1/ratio: ratio in [lower, upper]
        # is 1/ratio in [1/upper, 1/lower].
        rs = "token_k1" if case["level"] == "token" else "seq_sum_k1"
    weights, new_mask, metrics = compute_rollout_correction_and_rejection_mask(
        old_log_prob=old,
        rollout_log_prob=rollout,
        response_mask=mask,
        rollout_is=case["level"],
        rollout_is_threshold=upper,
        rollout_rs=rs,
        rollout_rs_threshold=None if rs is None else f"{1.0 / upper}_{1.0 / lower}",
    )
    w = weights.batch["rollout_is_weights"]
    out = {"weights": w.tolist(), "mask": new_mask.tolist(), "k3_kl": metrics["rollout_corr/k3_kl"]}
    adv = t(case["adv"]).unsqueeze(-1) * new_mask
    out.update(policy_value_and_grad(case, old, t(case["logp"]), adv, new_mask, w))
    return out


class _Tok:
    eos_token = "</s>"

    def decode(self, ids, skip_special_tokens=True):
        return ""


def overlong(case):
    lengths, scores = case["lengths"], case["scores"]
    n, width = len(lengths), max(max(lengths), 1)
    attention = torch.zeros((n, 1 + width), dtype=torch.long)
    attention[:, 0] = 1
    for i, length in enumerate(lengths):
        attention[i, 1 : 1 + length] = 1
    data = DataProto.from_dict(
        tensors={
            "prompts": torch.ones((n, 1), dtype=torch.long),
            "responses": torch.ones((n, width), dtype=torch.long),
            "attention_mask": attention,
        },
        non_tensors={
            "reward_model": np.array([{"ground_truth": ""} for _ in range(n)], dtype=object),
            "data_source": np.array(["parity"] * n, dtype=object),
            "extra_info": np.array([{"score": s} for s in scores], dtype=object),
        },
    )
    cfg = SimpleNamespace(enable=True, len=case["cache_len"], penalty_factor=case["factor"], log=False)
    manager = DAPORewardManager(
        tokenizer=_Tok(),
        num_examine=0,
        compute_score=lambda data_source, solution_str, ground_truth, extra_info: extra_info["score"],
        max_resp_len=case["max_len"],
        overlong_buffer_cfg=cfg,
    )
    reward = manager(data).to(F64).sum(-1)
    return {"reward": reward.tolist()}


HANDLERS = {
    "grpo": advantage,
    "dr_grpo": advantage,
    "rloo": advantage,
    "rfpp_baseline": advantage,
    "policy": policy,
    "rollout_corr": rollout_corr,
    "overlong": overlong,
}


def main():
    torch.set_default_dtype(F64)
    cases = json.load(sys.stdin)["cases"]
    json.dump({"results": [HANDLERS[c["family"]](c) for c in cases]}, sys.stdout)


if __name__ == "__main__":
    main()
