#!/usr/bin/env python3
"""End-to-end benchmarks of snapvk (standard library only). Writes JSON and prints a table.

  bench/e2e.py [--snapvk build/snapvk] [--out bench/results] [--quick] [suites...]

Suites:
  speed     prefill tok/s (prompt 512) and decode tok/s at depth 0 and 2048, synthetic 155M
            llama shape (dim 1024, 8 layers, 16/4 heads, ffn 2816, vocab 32000) in F16 and Q8_0
  overhead  SnapKV compression time (score + pool + select + gather) as a share of prefill:
            shape small-gqa (dim 256, 4 layers, 8/4 heads), 8K prompt, C = 1024
  decode    decode tok/s of snapkv (C = 1024) vs full at depth 4K, 8K, 16K on small-gqa, against
            the ideal (weight bytes + full KV bytes) / (weight bytes + compacted KV bytes)
  context   longest prompt that fits one --max-device-memory budget, full vs snapkv (C = 1024),
            on a KV-heavy synthetic shape (the memory model decides; the boundary lengths run)
"""
import argparse, json, os, subprocess, sys, tempfile, time

def run(cmd, check=True):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr.strip()}")
    return p

def synth(snapvk, cache, spec, typ):
    name = (spec.replace("=", "").replace(",", "_") if "=" in spec else spec) + f"-{typ}.gguf"
    path = os.path.join(cache, name)
    if not os.path.exists(path):
        flag = ["--shape", spec] if "=" in spec else ["--preset", spec]
        run([snapvk, "synth", *flag, "--type", typ, "-o", path])
    return path

def tokens_file(cache, n):
    path = os.path.join(cache, f"tokens-{n}.txt")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(" ".join(["1"] + [str(300 + (i * 7919) % 200) for i in range(n - 1)]))  # ids < 500: every vocab here
    return path

def generate(snapvk, model, cache, L, n, extra=()):
    p = run([snapvk, "run", "-m", model, "--tokens-file", tokens_file(cache, L), "-n", str(n), "--temp", "0",
             "--json", *extra])
    return json.loads(p.stdout)

def weight_bytes(path):
    return os.path.getsize(path)

def suite_speed(a, cache):
    rows = []
    for typ in ("f16", "q8_0"):
        model = synth(a.snapvk, cache, "155m", typ)
        r0 = generate(a.snapvk, model, cache, 512, 32)
        r1 = generate(a.snapvk, model, cache, 2048, 16, ["-b", "512"])
        rows.append({"model": f"155m {typ}", "prefill_tok_s_pp512": r0["timings"]["prefill_tok_s"],
                     "decode_tok_s_depth_512": r0["timings"]["decode_tok_s"],
                     "decode_tok_s_depth_2048": r1["timings"]["decode_tok_s"], "device": r0["device"]})
        print(f"  155m {typ}: pp512 {rows[-1]['prefill_tok_s_pp512']:.1f} tok/s, decode {rows[-1]['decode_tok_s_depth_512']:.2f} tok/s "
              f"(depth 512), {rows[-1]['decode_tok_s_depth_2048']:.2f} tok/s (depth 2048)", flush=True)
    return rows

def suite_overhead(a, cache):
    model = synth(a.snapvk, cache, "small-gqa", "f16")
    L = 2048 if a.quick else 8192
    r = generate(a.snapvk, model, cache, L, 4, ["--kv-policy", "snapkv", "--kv-budget", "1024", "-b", "512"])
    kv = r["kv"]
    comp = kv["score_ms"] + kv["pool_ms"] + kv["select_ms"] + kv["gather_ms"]
    row = {"prompt": L, "budget": 1024, "prefill_ms": r["timings"]["prefill_ms"], "compression_ms": comp,
           "share": comp / r["timings"]["prefill_ms"], **{k: kv[k] for k in ("score_ms", "pool_ms", "select_ms", "gather_ms")}}
    print(f"  small-gqa L={L} C=1024: compression {comp:.1f} ms of prefill {row['prefill_ms']:.1f} ms = {100 * row['share']:.1f}%", flush=True)
    return [row]

def suite_decode(a, cache):
    model = synth(a.snapvk, cache, "small-gqa", "f16")
    W = weight_bytes(model)
    rows = []
    for L in ((2048, 4096) if a.quick else (4096, 8192, 16384)):
        full = generate(a.snapvk, model, cache, L, 64, ["-b", "512"])
        snap = generate(a.snapvk, model, cache, L, 64, ["-b", "512", "--kv-policy", "snapkv", "--kv-budget", "1024"])
        ideal = (W + full["kv"]["bytes"]) / (W + snap["kv"]["bytes"])
        got = snap["timings"]["decode_tok_s"] / full["timings"]["decode_tok_s"]
        rows.append({"depth": L, "full_tok_s": full["timings"]["decode_tok_s"], "snapkv_tok_s": snap["timings"]["decode_tok_s"],
                     "speedup": got, "ideal": ideal, "share_of_ideal": got / ideal})
        print(f"  depth {L}: full {rows[-1]['full_tok_s']:.1f} tok/s, snapkv {rows[-1]['snapkv_tok_s']:.1f} tok/s: "
              f"{got:.2f}x of ideal {ideal:.2f}x ({100 * got / ideal:.0f}%)", flush=True)
    return rows

def fits(a, model, cache, L, policy, budget, dry_run=True):
    """Whether a prompt of L tokens fits the budget: by the memory model (--dry-run), or by running it."""
    cmd = [a.snapvk, "--max-device-memory", budget, "run", "-m", model, "--tokens-file", tokens_file(cache, L),
           "-n", "1", "--temp", "0", "--json", "-b", "256"]
    if policy != "full":
        cmd += ["--kv-policy", policy, "--kv-budget", "1024"]
    if dry_run:
        cmd.append("--dry-run")
    p = run(cmd, check=False)
    if p.returncode == 0:
        return True
    if "fit" not in p.stderr and "budget" not in p.stderr:
        sys.exit(f"unexpected failure at L={L} ({policy}): {p.stderr.strip()}")
    return False

def suite_context(a, cache):
    # KV-heavy: 24 layers of 4 KV heads x 64 dims (24 KiB of f16 K/V per token) on a 128-wide model
    shape = "dim=128,layers=24,heads=4,kv_heads=4,ff=256,vocab=512,ctx=262144,head_dim=64"
    model = synth(a.snapvk, cache, shape, "f16")
    budget = "48M" if a.quick else "64M"
    out = {}
    for policy in ("full", "snapkv"):
        lo, hi = 256, 256
        while fits(a, model, cache, hi, policy, budget):  # double until refused, then bisect in steps of 256
            lo, hi = hi, hi * 2
        while hi - lo > 256:
            mid = (lo + hi) // 2 // 256 * 256
            if fits(a, model, cache, mid, policy, budget): lo = mid
            else: hi = mid
        # The model's answer, checked for real: the next length is refused up front, and the longest
        # one runs (for snapkv only with --verify-long: a prompt that long takes a long time on a CPU).
        refused = not fits(a, model, cache, lo + 256, policy, budget, dry_run=False)
        ran = (policy == "full" or a.verify_long) and fits(a, model, cache, lo, policy, budget, dry_run=False)
        if not refused or ((policy == "full" or a.verify_long) and not ran):
            sys.exit(f"memory model and run disagree for {policy} at {lo} tokens")
        out[policy] = lo
        print(f"  {policy}: longest prompt under {budget}: {lo} tokens ({'ran it, ' if ran else ''}{lo + 256} refused)", flush=True)
    row = {"shape": shape, "budget": budget, "full_tokens": out["full"], "snapkv_tokens": out["snapkv"],
           "ratio": out["snapkv"] / out["full"]}
    print(f"  snapkv / full = {row['ratio']:.1f}x", flush=True)
    return [row]

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapvk", default="build/snapvk")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "snapvk-bench"))
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ap.add_argument("--verify-long", action="store_true", help="context: also run the longest snapkv prompt")
    ap.add_argument("suites", nargs="*", default=["speed", "overhead", "decode", "context"])
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.cache, exist_ok=True)
    commit = run(["git", "rev-parse", "--short", "HEAD"], check=False).stdout.strip()
    device = run([a.snapvk, "devices"]).stdout.splitlines()[0]
    results = {"commit": commit, "device": device, "date": time.strftime("%Y-%m-%d %H:%M"), "suites": {}}
    fns = {"speed": suite_speed, "overhead": suite_overhead, "decode": suite_decode, "context": suite_context}
    for s in a.suites:
        print(f"{s}:", flush=True)
        t0 = time.time()
        results["suites"][s] = fns[s](a, a.cache)
        print(f"  ({time.time() - t0:.0f} s)", flush=True)
    path = os.path.join(a.out, f"e2e-{commit or 'local'}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {path}")

if __name__ == "__main__":
    main()
