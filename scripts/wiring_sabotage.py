#!/usr/bin/env python3
"""Issue 18's proof that the wiring tests can fail: each entry below changes one line of the
training step (the feature parsed but not applied), runs the test meant to catch it, records
how it failed in target/sabotage_results.txt and restores the file.

Usage, from anywhere, on a clean tree: scripts/wiring_sabotage.py [ID ...]   (IDs: 1 2 3 4 4b ... 8b)
Every entry must end with rc != 0; a sabotage that passes is a test that cannot fail.
"""
import subprocess, sys, os, re
os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
os.makedirs('target', exist_ok=True)
OUT = os.path.abspath('target/sabotage_results.txt')
passed = []
T='crates/rlpo-train/src/'
S=[
 ("1 HAPO temperature", T+'trainer.rs', '.filter(|h| h.adaptive_temperature)', '.filter(|_| false)', 'wiring', 'hapo_temperature_reaches_every_sampled_token'),
 ("2 D3S mask", T+'learner.rs', 'let mb = ctx.plan.micro_batch(u0, micro);', 'let mut mb = ctx.plan.micro_batch(u0, micro); mb.loss_mask = mb.response_mask.shallow_clone();', 'wiring', 'd3s_mask_gates_the_loss_gradient'),
 ("3 epochs", T+'learner.rs', 'for epoch in 0..recipe.trainer.ppo_epochs {', 'for epoch in 0..1 {', 'wiring_update', 'several_optimizer_steps_per_training_step'),
 ("4 KL", T+'learner.rs', 'let rl = ctx.ref_logp.map(|r| r.narrow(0, u0, micro));', 'let rl: Option<Tensor> = None;', 'wiring_update', 'kl_in_training_is_k3_against_the_initial_policy'),
 ("4b KL term out of the loss", 'crates/rlpo-algo/src/compose/loss.rs', 'Some(k) => &pg + k * loss.kl_coef,', 'Some(k) => &pg + k * 0.0,', 'wiring_update', 'kl_in_training_is_k3_against_the_initial_policy'),
 ("5 staleness", T+'trainer.rs', 'let on_policy = !stale;', 'let on_policy = true;', 'wiring_update', 'stale_step_loss_is_taken_against_the_generating_policy'),
 ("6 bf16", T+'trainer.rs', 'let opts = LoadOptions { device, kind };', 'let opts = LoadOptions { device, kind: tch::Kind::Float };', 'wiring_update', 'bf16_training_moves_fp32_masters_and_resumes_bit_exactly'),
 ("7 HAPO advantages", 'crates/rlpo-algo/src/compose/plan.rs', 'Ok((out.advantages, Some(out.fallback)))', 'Ok((group_advantages(rewards, g, &grpo)?, Some(out.fallback)))', 'wiring', 'hapo_advantages_are_token_level_group_averages_of_rewards_and_lengths'),
 ("8a Ctrl-C ignored at the step boundary", T+'trainer/run_loop.rs', 'Ok(true) => break,', 'Ok(true) => {}', 'interrupt_rollout', ''),
 ("8b prefetched rollout not finished before the save", T+'trainer.rs', 'if let Some(p) = self.prefetched.as_mut() {\n            if let (None, Some(id)) = (&p.batch, p.job) {', 'if let Some(p) = self.prefetched.as_mut().filter(|_| false) {\n            if let (None, Some(id)) = (&p.batch, p.job) {', 'interrupt_rollout', ''),
]
only = sys.argv[1:]
for name, f, old, new, test, filt in S:
    if only and name.split()[0] not in only: continue
    src = open(f).read()
    assert src.count(old) == 1, (name, src.count(old))
    open(f, 'w').write(src.replace(old, new))
    try:
        cmd = ['cargo', 'test', '--workspace', '--test', test, '--', '--test-threads=1'] + ([filt] if filt else [])
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        out = p.stdout + p.stderr
        print(f"{name}: {'caught' if p.returncode else 'NOT CAUGHT'}", flush=True)
        if p.returncode == 0:
            passed.append(name)
        res = re.findall(r'test result: .*', out)
        fails = re.findall(r"panicked at [^\n]*\n([^\n]*)", out)
        err = [l for l in out.splitlines() if l.startswith('error')][:3]
        with open(OUT, 'a') as o:
            o.write(f"## {name}: {f}\n- `{old.splitlines()[0]}` -> `{new.splitlines()[0]}`\n- test {test} {filt}: rc={p.returncode} {res} \n")
            for x in fails[:3]: o.write(f"  - {x[:400]}\n")
            for x in err: o.write(f"  - {x[:300]}\n")
    finally:
        open(f, 'w').write(src)
print(f"results in {OUT}")
if passed:
    sys.exit(f"sabotages no test caught: {passed}")
