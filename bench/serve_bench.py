#!/usr/bin/env python3
"""Benchmark of `snapvk serve` over HTTP (standard library only). Prints a table, writes JSON.

  bench/serve_bench.py --model SmolLM2-135M-Instruct.Q4_1.gguf [--snapvk build/snapvk]
                       [--out bench/results/serve.json] [suites...]

Suites:
  capacity  sessions admitted at once under --max-device-memory 512M with 4K-token conversations
            (-c 4096, prompts of about 3950 tokens, 96 answer tokens each), KV policy full vs
            snapkv at C = 256: 48 streams are sent at once and /metrics is read once the server
            has admitted what fits (the rest wait in its queue). The server's admission is its
            memory model (host/session/memory_model.*), the same one that refuses what cannot fit.
  decode    aggregate decode tok/s at 1, 4, 8 and 16 parallel streams (short prompts, 48 tokens
            each), with batched decode (--decode-batch 16) and without (--decode-batch 0)
  ttft      time to first token of a 512-token prompt, on an idle server and while 8 streams decode
"""
import argparse, json, os, re, signal, socket, subprocess, sys, threading, time, urllib.request

WORDS = ("the quick brown fox jumps over a lazy dog while seven wise owls watch from an old oak tree "
         "near the quiet river where children play and fishermen mend their nets before the evening "
         "storm rolls across green hills toward the small village").split()


class Server:
    def __init__(self, snapvk, model, args):
        self.proc = subprocess.Popen([snapvk, "serve", "-m", model, "--port", "0", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not m:
            sys.exit(f"the server did not start: {line}{self.proc.stderr.read()}")
        self.port = int(m.group(1))
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # drain

    def metrics(self):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics").read().decode()
        return {k: float(v) for k, v in re.findall(r"^(snapvk_[a-z_]+) ([0-9.e+-]+)$", text, re.M)}

    def stop(self, kill=False):
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.proc.wait(timeout=600)


def stream(port, body, events, stop=None):
    """POSTs a streamed completion; records (time, text) of each chunk. Returns the usage-bearing end."""
    s = socket.create_connection(("127.0.0.1", port))
    data = json.dumps({**body, "stream": True}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
    f = s.makefile("rb")
    buf = b""
    last = None
    while True:
        if stop is not None and stop.is_set():
            s.close()
            return None
        line = f.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            payload = line[6:].strip()
            if payload == b"[DONE]":
                break
            j = json.loads(payload)
            if "error" in j:
                raise RuntimeError(j["error"]["message"])
            c = j["choices"][0]
            if c.get("text"):
                events.append(time.monotonic())
            if c.get("finish_reason"):
                last = j
    s.close()
    return last


def words(n, seed):
    return " ".join(WORDS[(i * 7 + seed * 13) % len(WORDS)] for i in range(n))


def count_tokens(snapvk, model, text):
    out = subprocess.run([snapvk, "tokenize", "-m", model, "-p", text, "--json"], capture_output=True, text=True)
    return len(json.loads(out.stdout))


def capacity(a, res):
    # about 3950 tokens: the 4K conversation, with room for the 96-token answer in -c 4096
    n = 3000
    while count_tokens(a.snapvk, a.model, words(n, 0)) < 3950:
        n += 100
    L = count_tokens(a.snapvk, a.model, words(n, 0))
    out = {"prompt_tokens": L, "n_ctx": 4096, "budget": "512M"}
    for name, kv in (("full", ["--kv-policy", "full"]), ("snapkv", ["--kv-policy", "snapkv", "--kv-budget", "256"])):
        srv = Server(a.snapvk, a.model, ["--max-device-memory", "512M", "-c", "4096", "-b", "64", "--parallel", "64",
                                         "--queue", "64", *kv])
        stop = threading.Event()
        threads = [threading.Thread(target=lambda i=i: _quiet(stream, srv.port,
                                    {"prompt": words(n, i), "max_tokens": 96}, [], stop)) for i in range(48)]
        for t in threads:
            t.start()
        time.sleep(8)
        m = srv.metrics()
        out[name] = {"admitted": int(m["snapvk_slots_processing"]), "queued": int(m["snapvk_queue_length"]),
                     "reserved_bytes": int(m["snapvk_memory_reserved_bytes"]),
                     "available_bytes": int(m["snapvk_memory_available_bytes"])}
        print(f"capacity {name}: {out[name]}", flush=True)
        stop.set()
        srv.stop(kill=True)
        for t in threads:
            t.join()
    out["ratio"] = out["snapkv"]["admitted"] / max(1, out["full"]["admitted"])
    res["capacity"] = out


def _quiet(fn, *args):
    try:
        fn(*args)
    except Exception:
        pass


def aggregate(port, p, extra=None):
    """Aggregate decode tok/s of p concurrent streamed requests of 48 tokens (short prompts)."""
    events = [[] for _ in range(p)]
    threads = [threading.Thread(target=stream, args=(port, {"prompt": f"Story {i}: once upon a time", "max_tokens": 48,
                                                             **(extra or {})}, events[i])) for i in range(p)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if sum(len(e) for e in events) < 2:
        sys.exit(f"aggregate: {p} streams produced fewer than two chunks of text")
    first = min(e[0] for e in events if e)
    last = max(e[-1] for e in events if e)
    return sum(len(e) - 1 for e in events if e) / (last - first)


def decode(a, res):
    out = {}
    for batch in (16, 0):
        srv = Server(a.snapvk, a.model, ["--parallel", "16", "--decode-batch", str(batch), "--temp", "0"])
        for p in (1, 4, 8, 16):
            rate = aggregate(srv.port, p)
            out[f"batch{batch}_p{p}"] = rate
            print(f"decode batch={batch} parallel={p}: {rate:.1f} tok/s", flush=True)
        srv.stop()
    for b in (16, 0):
        out[f"batch{b}_speedup_p8"] = out[f"batch{b}_p8"] / out[f"batch{b}_p1"]
    res["decode"] = out


def ttft(a, res):
    srv = Server(a.snapvk, a.model, ["--parallel", "16", "--temp", "0"])
    prompt = words(450, 3)
    out = {"prompt_tokens": count_tokens(a.snapvk, a.model, prompt)}
    ev = []
    t0 = time.monotonic()
    stream(srv.port, {"prompt": prompt, "max_tokens": 4}, ev)
    out["idle_s"] = ev[0] - t0
    stop = threading.Event()
    bg = [threading.Thread(target=_quiet, args=(stream, srv.port, {"prompt": f"Tale {i}", "max_tokens": 400}, [], stop))
          for i in range(8)]
    for t in bg:
        t.start()
    time.sleep(3)
    ev = []
    t0 = time.monotonic()
    stream(srv.port, {"prompt": prompt + " again", "max_tokens": 4}, ev)
    out["under_8_streams_s"] = ev[0] - t0
    print(f"ttft: {out}", flush=True)
    stop.set()
    srv.stop(kill=True)
    for t in bg:
        t.join()
    res["ttft"] = out


def run(suites, out, res=None):
    """Parses --snapvk, --model, --out and the suites to run; runs them, writes and prints the JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--snapvk", default="build/snapvk")
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default=out)
    ap.add_argument("suites", nargs="*", default=list(suites))
    a = ap.parse_args()
    res = {"commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
           **(res or {})}
    for s in a.suites:
        suites[s](a, res)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    run({"capacity": capacity, "decode": decode, "ttft": ttft}, "bench/results/serve.json")
