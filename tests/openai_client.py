#!/usr/bin/env python3
"""`snapvk serve` as the official `openai` Python client uses it (ctest: serve_openai_client).

Starts `snapvk serve` on a free loopback port with SmolLM2 (../shared/models or
$SNAPVK_TEST_MODELS) and checks, through the client: chat and completions, streamed and not;
token-id prompts and arrays of them; n; seed; chat logprobs/top_logprobs; completion logprobs
and echo, shaped as the client's types read them; a bad request is an openai.BadRequestError
naming its field, and the server keeps serving.

Usage: openai_client.py SNAPVK_BINARY SOURCE_DIR. Exits 77 (skipped) when the openai package is
missing: tools/install-deps.sh installs it in ~/.cache/snapvk/venv.
"""
import math
import os
import re
import subprocess
import sys
import time

SKIP = 77
MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"

try:
    import openai
except ImportError:
    print("skipped: the openai package is missing (run tools/install-deps.sh: it makes ~/.cache/snapvk/venv)")
    sys.exit(SKIP)


def start_server(binary, model):
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"openai_client_{os.getpid()}.log"), "w+")
    proc = subprocess.Popen([binary, "serve", "-m", model, "--alias", "smollm2", "--port", "0", "--temp", "0",
                             "--parallel", "2"],
                            stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(600):
        log.seek(0)
        m = re.search(r"http://127\.0\.0\.1:([0-9]+)", log.read())
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    log.seek(0)
    sys.exit("the server did not start:\n" + log.read())


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def run(client):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    # Chat, whole and streamed: the same greedy text.
    whole = client.chat.completions.create(model="smollm2", messages=msgs, max_tokens=8)
    text = whole.choices[0].message.content
    check("Paris" in text, f"chat answer: {text!r}")
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       client.chat.completions.create(model="smollm2", messages=msgs, max_tokens=8, stream=True)
                       if c.choices)
    check(streamed == text, f"streamed {streamed!r} != {text!r}")

    # Chat logprobs: one entry per answer token, top_logprobs of the asked size, greedy = the top one.
    lp = client.chat.completions.create(model="smollm2", messages=msgs, max_tokens=8, logprobs=True, top_logprobs=3)
    content = lp.choices[0].logprobs.content
    check("".join(t.token for t in content) == lp.choices[0].message.content, "chat logprobs tokens != text")
    for t in content:
        check(len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token, f"top_logprobs of {t}")
        check(abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6 and t.logprob <= 0, f"logprob of {t}")
        check(bytes(t.bytes).decode("utf-8", "replace") == t.token or not t.token.isprintable(), f"bytes of {t}")

    # Completions: an array of prompts gives a choice each, each as it would answer alone.
    c = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=6)
    batch = client.completions.create(model="smollm2", prompt=["The capital of France is", "Two plus two is"],
                                      max_tokens=6)
    check([ch.index for ch in batch.choices] == [0, 1], "choice indexes")
    check(batch.choices[0].text == c.choices[0].text, "a prompt of a batch answers as alone")

    # Token ids, alone and in an array: used verbatim, echoed back as their tokens.
    ids = [504, 3575, 282, 4649, 314]
    by_ids = client.completions.create(model="smollm2", prompt=ids, max_tokens=4, echo=True, logprobs=0)
    check(by_ids.usage.prompt_tokens == len(ids), f"usage {by_ids.usage}")
    toks = by_ids.choices[0].logprobs.tokens
    check(len(toks) == len(ids) + by_ids.usage.completion_tokens, f"echoed tokens {toks}")
    check(by_ids.choices[0].text == "".join(toks), "echo text is its tokens")
    two = client.completions.create(model="smollm2", prompt=[ids, ids], max_tokens=4)
    check(len(two.choices) == 2 and two.choices[0].text == two.choices[1].text ==
          by_ids.choices[0].text[len("".join(toks[:len(ids)])):], "token-id arrays: a choice each")

    # Echo with logprobs as lm-evaluation-harness asks (one token, logprobs 1): every prompt token
    # scored but the first, each no likelier than the top alternative at its position.
    echo = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=1, echo=True,
                                     logprobs=1)
    lps = echo.choices[0].logprobs
    check(lps.token_logprobs[0] is None and lps.top_logprobs[0] is None, "the first prompt token is unscored")
    check(all(x is not None and x <= 0 for x in lps.token_logprobs[1:]), "prompt token logprobs")
    check(len(lps.text_offset) == len(lps.tokens) and lps.text_offset[0] == 0, "text_offset")
    check(echo.choices[0].text == "".join(lps.tokens), f"echo text {echo.choices[0].text!r}")
    check("The capital of France is" in echo.choices[0].text, f"echo text {echo.choices[0].text!r}")
    for tok, top in zip(lps.token_logprobs[1:], lps.top_logprobs[1:]):
        check(len(top) == 1 and max(top.values()) >= tok - 1e-6, f"top {top} vs {tok}")

    # n and seed: the same seed gives the same choices.
    kw = dict(model="smollm2", prompt="Once upon a time", max_tokens=12, temperature=1.0, seed=7, n=2)
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    check(len(a.choices) == 2, "n=2 choices")
    check([x.text for x in a.choices] == [x.text for x in b.choices], "same seed, same choices")

    # A bad request: BadRequestError naming the field, and the server keeps serving.
    for bad, field in ((dict(prompt="hi", max_tokens=-1), "max_tokens"), (dict(prompt=[], max_tokens=2), "prompt"),
                       (dict(prompt="hi", logprobs=99), "logprobs")):
        try:
            client.completions.create(model="smollm2", **bad)
            raise AssertionError(f"{bad} was accepted")
        except openai.BadRequestError as e:
            check(e.body and e.body.get("param") == field, f"{bad}: {e.body}")
    check(client.completions.create(model="smollm2", prompt="Hi", max_tokens=2).usage.completion_tokens == 2,
          "still serving")


def main():
    binary, source = sys.argv[1], sys.argv[2]
    models = os.environ.get("SNAPVK_TEST_MODELS") or os.path.join(source, "..", "shared", "models")
    model = os.path.join(models, MODEL)
    if not os.path.exists(model):
        sys.exit(f"{model} is missing")
    proc, port = start_server(binary, model)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=300)
        run(client)
    finally:
        proc.terminate()
        proc.wait(60)
    print(f"openai {openai.__version__}: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
