// Aggregate decode tok/s of N sequences: one batched forward pass per step
// (Session::decode_batch, what `snapvk serve` runs) against each session decoding on its own,
// one after another (round-robin). Wall time on the device, no HTTP.
//
//   snapvk_bench_decode_batch MODEL.gguf [steps=16] [N...=1 4 8 16]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "host/model/model.h"
#include "host/session/sampler.h"
#include "host/session/session.h"

using namespace snapvk;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.gguf [steps] [N...]\n", argv[0]);
    return 2;
  }
  const int steps = argc > 2 ? std::atoi(argv[2]) : 16;
  std::vector<uint32_t> ns;
  for (int i = 3; i < argc; ++i) ns.push_back(uint32_t(std::atoi(argv[i])));
  if (ns.empty()) ns = {1, 4, 8, 16};
  uint32_t most = 0;
  for (uint32_t n : ns) most = std::max(most, n);
  Context ctx;
  Kernels kernels(ctx);
  Model model(kernels, argv[1]);
  SessionOptions so;
  so.n_ctx = 512;
  so.n_batch = 64;
  std::vector<std::unique_ptr<Session>> sessions;
  std::vector<int32_t> next;
  for (uint32_t i = 0; i < most; ++i) {
    sessions.push_back(std::make_unique<Session>(model, so));
    const auto toks = model.tokenizer().encode("Story " + std::to_string(i) + ": once upon a time, in a land", true);
    next.push_back(argmax(sessions.back()->prefill(toks)));
  }
  DecodeBatch batch(model, most);
  const bool profile = std::getenv("SNAPVK_BENCH_PROFILE") != nullptr;  // GPU time per kernel of the batched passes
  batch.cs.set_profiling(profile);
  std::printf("%-4s %16s %16s %8s\n", "N", "batched tok/s", "alone tok/s", "ratio");
  for (uint32_t n : ns) {
    std::vector<Session*> ss;
    for (uint32_t i = 0; i < n; ++i) ss.push_back(sessions[i].get());
    std::vector<int32_t> toks(next.begin(), next.begin() + n);
    Session::decode_batch(batch, ss, toks);  // warm-up
    auto t0 = Clock::now();
    for (int s = 0; s < steps; ++s) Session::decode_batch(batch, ss, toks);
    const double batched = n * steps / std::chrono::duration<double>(Clock::now() - t0).count();
    t0 = Clock::now();
    for (int s = 0; s < steps; ++s)
      for (Session* x : ss) x->decode(toks[0]);
    const double alone = n * steps / std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("%-4u %16.1f %16.1f %7.2fx\n", n, batched, alone, batched / alone);
    if (profile) {
      for (const KernelTiming& t : batch.cs.timings())
        std::printf("     %-28s %9.1f ms %6u calls\n", t.name.c_str(), t.total_ms, unsigned(t.count));
      batch.cs.reset_timings();
    }
    std::fflush(stdout);
  }
  return 0;
}
