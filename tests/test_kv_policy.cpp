// The KV cache policies' options (host/kv/kv_policy.h): budgets, windows, kernel sizes and sinks
// are bounded, and the budgets computed from them saturate rather than wrap (issue 7).
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "host/kv/kv_policy.h"
#include "tests/expect_error.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

TEST(KvPolicy, BudgetsWindowsAndSumsCannotWrap) {
  auto bad = [](const std::function<void(KvPolicyOptions&)>& edit, const std::string& what) {
    KvPolicyOptions o;
    o.policy = KvPolicy::SnapKV, o.budget = 64, o.window = 8;
    edit(o);
    expect_error([&] { o.validate(); }, what);
  };
  bad([](KvPolicyOptions& o) { o.budget = kU32Max; }, "KV budget 4294967295 is too large (at most 16777216)");
  bad([](KvPolicyOptions& o) { o.budget = 0, o.ratio = 0.5f, o.window = kU32Max; },
      "KV window 4294967295 is too large");
  // kernel / 2 is added to a position in a 32-bit int on the GPU (shaders/pool.comp).
  bad([](KvPolicyOptions& o) { o.kernel = kU32Max; }, "pooling kernel size 4294967295 is too large");
  // sinks + window used to wrap past the budget check: 2^32 - 4 + 8 = 4.
  bad([](KvPolicyOptions& o) { o.policy = KvPolicy::StreamingLLM, o.sinks = kU32Max - 3; },
      "sinks 4294967292 is too large");
  // budget_for: window + 1 with a ratio budget.
  KvPolicyOptions r;
  r.policy = KvPolicy::SnapKV, r.ratio = 0.5f, r.window = kMaxContext;
  r.validate();
  EXPECT_EQ(r.budget_for(100), kMaxContext + 1);
  // PyramidKV: 2 * (C - W) exceeded 32 bits for a long prompt and wrapped the first layers'
  // budgets down; now they saturate (a budget of L or more keeps the layer whole).
  KvPolicyOptions p;
  p.policy = KvPolicy::PyramidKV, p.ratio = 0.9f, p.window = 32;
  p.validate();
  const uint32_t L = kU32Max, C = p.budget_for(L);
  EXPECT_GT(C, 3'800'000'000u);
  const std::vector<uint32_t> b = p.layer_budgets(L, 8);
  EXPECT_EQ(b.front(), kU32Max);  // 2(C - W) - lo + W > 2^32: saturated, not wrapped
  for (size_t l = 1; l < b.size(); ++l) EXPECT_LE(b[l], b[l - 1]) << "layer " << l;
  const uint64_t lo = (uint64_t(C) - 32) / 20;
  EXPECT_EQ(b.back(), lo + 32 + (2 * (uint64_t(C) - 32) - lo - lo) % 7);  // hi - 7 * step, exactly
}

}  // namespace
}  // namespace snapvk::test
