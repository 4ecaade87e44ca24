// Resource bounds: creating and destroying many sessions leaks neither device nor host memory,
// and a long SnapKV generation stays at the device memory the memory model predicts.
#include <gtest/gtest.h>

#include <fstream>
#if defined(__has_include)
#if __has_include(<sanitizer/allocator_interface.h>)
#include <sanitizer/allocator_interface.h>
#endif
#endif

#include "host/session/memory_model.h"
#include "host/session/sampler.h"
#include "host/session/session.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SNAPVK_TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(SNAPVK_TEST_ASAN)
#define SNAPVK_TEST_ASAN 1
#endif

// Host memory in use. Under AddressSanitizer, whose quarantine keeps freed memory resident for
// a while, the heap bytes still allocated instead of the resident set.
uint64_t host_bytes() {
#ifdef SNAPVK_TEST_ASAN
  return __sanitizer_get_current_allocated_bytes();
#else
  std::ifstream in("/proc/self/statm");
  uint64_t pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * 4096;
#endif
}

struct Reliability : VkTest {
  static Model& model() {
    // Never destroyed: at exit the validation layer may already be gone (see gpu_fixture.cpp).
    static Model* m = new Model(kernels(), model_path("stories260K.gguf"));
    return *m;
  }
};

TEST_F(Reliability, ThousandSessionsLeaveNoDeviceOrHostMemoryBehind) {
  const auto prompt = model().tokenizer().encode("Once upon a time, there was a little girl named Lily.", true);
  auto churn = [&](int n) {
    for (int i = 0; i < n; ++i) {
      SessionOptions o;
      o.n_ctx = 64 + (i % 7) * 16;  // varied shapes
      o.n_batch = 16;
      o.kv.policy = i % 2 ? KvPolicy::SnapKV : KvPolicy::Full;
      if (i % 2) o.kv.budget = 12, o.kv.window = 4;
      Session s(model(), o);
      if (i % 50 == 0) s.prefill(prompt);  // some of them do work, compressing or not
    }
  };
  churn(50);  // warm-up: pipelines compiled, allocator pools grown
  const uint64_t device_before = ctx().memory().current(), allocs_before = ctx().memory().allocations();
  const uint64_t host_before = host_bytes();
  churn(1000);
  EXPECT_EQ(ctx().memory().current(), device_before);
  EXPECT_EQ(ctx().memory().allocations(), allocs_before);
  const uint64_t host_after = host_bytes();
  EXPECT_LT(host_after, host_before + (16u << 20)) << "host memory grew from " << host_before << " to " << host_after;
}

TEST_F(Reliability, TenThousandTokenSoakStaysAtTheModelledMemory) {
  const auto prompt = model().tokenizer().encode(
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her dog.",
      true);
  const uint32_t L = uint32_t(prompt.size()), n_gen = 10000;
  SessionOptions o;
  o.n_ctx = L + n_gen;
  o.n_batch = 32;
  o.kv.policy = KvPolicy::SnapKV;
  o.kv.budget = 16;
  o.kv.window = 4;
  const uint64_t before = ctx().memory().current();
  ctx().memory().reset_peak();
  Session s(model(), o);
  auto logits = s.prefill(prompt);
  const MemoryEstimate e = estimate_memory(model().config(), 0, memory_query(model(), o, L));
  const uint64_t steady = ctx().memory().current() - before;
  Sampler sampler(SamplerParams{0.8f, 40, 0.95f, 0.05f, 1.1f, 64, 7});
  for (uint32_t i = 0; i + 1 < n_gen; ++i) {
    const int32_t t = sampler.sample(logits);
    sampler.accept(t);
    logits = s.decode(t);
    if (i % 2500 == 0) {
      EXPECT_EQ(ctx().memory().current() - before, steady) << "after " << i << " tokens";
    }
  }
  EXPECT_EQ(s.n_past(), L + n_gen - 1);
  EXPECT_EQ(ctx().memory().current() - before, steady) << "no allocation while decoding";
  EXPECT_NEAR(double(steady), double(e.activations + e.kv_cache), double(e.activations + e.kv_cache) * 0.02 + 65536);
  EXPECT_LE(ctx().memory().peak() - before, e.peak + e.peak / 50 + 65536);
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace snapvk::test
