// The device-memory model (host/session/memory_model.h) and --max-device-memory: the model
// predicts what sessions allocate, budgets are enforced up front with a clear error, and a
// refused session harms nothing. Its figures and the session's shape checks are exact up to
// the largest legal shapes and refuse what would wrap (issue 7).
#include <gtest/gtest.h>

#include <barrier>
#include <functional>
#include <optional>
#include <thread>

#include "host/session/memory_model.h"
#include "host/session/session.h"
#include "tests/expect_error.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"
#include "tests/tiny_llama.h"

namespace snapvk::test {
namespace {

std::vector<int32_t> story_prompt(const Model& m, int repeats) {
  std::string text;
  for (int i = 0; i < repeats; ++i) text += "Once upon a time, there was a little girl named Lily. She loved to play. ";
  return m.tokenizer().encode(text, true);
}

MemoryQuery query_for(const Session& s, uint32_t L) { return memory_query(s.model(), s.options(), L); }

// Allocation granularity (alignment of each buffer) is the only slack allowed.
void expect_close(uint64_t measured, uint64_t predicted, const std::string& what) {
  EXPECT_LE(predicted, measured + measured / 50 + 4096) << what;
  EXPECT_LE(measured, predicted + predicted / 20 + 64 * 1024) << what;
}

TEST(MemoryModel, ModelPredictsMeasuredPeakForFullAndCompressedSessions) {
  Context ctx;
  Kernels k(ctx);
  Model m(k, model_path("stories260K.gguf"));
  const auto prompt = story_prompt(m, 8);
  const uint32_t L = uint32_t(prompt.size());
  for (KvPolicy p : {KvPolicy::Full, KvPolicy::SnapKV, KvPolicy::PyramidKV, KvPolicy::H2O, KvPolicy::AdaKV}) {
    for (KvType t : {KvType::F16, KvType::F32}) {
      SessionOptions o;
      o.n_ctx = L + 40;
      o.n_batch = 32;
      o.kv_type_k = o.kv_type_v = t;
      o.kv.policy = p;
      if (p != KvPolicy::Full) o.kv.budget = 48, o.kv.window = 8;
      const uint64_t before = ctx.memory().current();
      ctx.memory().reset_peak();
      {
        Session s(m, o);
        s.prefill(prompt);
        const MemoryEstimate e = estimate_memory(m.config(), 0, query_for(s, L));
        const std::string what = std::string(kv_policy_name(p)) + " " + kv_type_name(t);
        expect_close(ctx.memory().peak() - before, e.peak, what + " peak");
        expect_close(ctx.memory().current() - before, e.activations + e.kv_cache, what + " after prefill");
        EXPECT_EQ(s.kv_stats().allocated_bytes + 8ull * m.config().n_head_kv * m.config().n_layer,
                  e.kv_cache + (p == KvPolicy::Full ? 8ull * m.config().n_head_kv * m.config().n_layer : 0))
            << what;
      }
      EXPECT_EQ(ctx.memory().current(), before) << "a destroyed session leaves nothing behind";
    }
  }
}

TEST(MemoryModel, BudgetRefusesUpFrontAndLeavesProcessUsable) {
  ContextOptions co;
  co.memory_budget = 4u << 20;
  Context ctx(co);
  Kernels k(ctx);
  Model m(k, model_path("stories260K.gguf"));
  SessionOptions big;
  big.n_ctx = 2048;  // a full f32 cache of 2048 positions: 5 MiB
  big.kv_type_k = big.kv_type_v = KvType::F32;
  const uint64_t before = ctx.memory().current();
  try {
    Session s(m, big);
    FAIL() << "a session over the budget was created";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("does not fit the device memory budget"), std::string::npos) << msg;
    EXPECT_NE(msg.find("MiB"), std::string::npos) << msg;
  }
  EXPECT_EQ(ctx.memory().current(), before);
  SessionOptions small = big;
  small.n_ctx = 256;
  Session ok(m, small);
  const auto logits = ok.prefill(story_prompt(m, 1));
  EXPECT_EQ(logits.size(), m.config().n_vocab);
  // An allocation past the budget outside any session fails cleanly too.
  EXPECT_THROW(Buffer(ctx, 64u << 20), Error);
}

// The point of SnapKV: under one budget, a compressed session holds a far longer prompt.
TEST(MemoryModel, SnapkvFitsLongerPromptsThanFullUnderOneBudget) {
  ContextOptions co;
  co.memory_budget = 2560u << 10;
  Context ctx(co);
  Kernels k(ctx);
  Model m(k, model_path("stories260K.gguf"));
  auto fits = [&](KvPolicy p, uint32_t L) {
    SessionOptions o;
    o.n_ctx = L + 8;
    o.n_batch = 64;
    o.kv_type_k = o.kv_type_v = KvType::F32;
    o.kv.policy = p;
    if (p != KvPolicy::Full) o.kv.budget = 32, o.kv.window = 8;
    try {
      Session s(m, o);
      std::vector<int32_t> prompt(L, 300);
      prompt[0] = 1;
      s.prefill(prompt);
      return true;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("budget"), std::string::npos) << e.what();
      return false;
    }
  };
  // the longest prompt that fits, to a step of 64 tokens
  auto longest = [&](KvPolicy p) {
    uint32_t lo = 0, hi = 4096 / 64;
    while (lo < hi) {
      const uint32_t mid = (lo + hi + 1) / 2;
      if (fits(p, mid * 64))
        lo = mid;
      else
        hi = mid - 1;
    }
    return lo * 64;
  };
  const uint32_t full = longest(KvPolicy::Full), snap = longest(KvPolicy::SnapKV);
  EXPECT_GT(full, 0u);
  EXPECT_GE(snap, 2 * full) << "full " << full << ", snapkv " << snap;
}

TEST(MemoryModel, BudgetHoldsCountAsInUseForOtherThreadsOnly) {
  MemoryTracker t;
  t.set_budget(1000);
  auto refused = [](uint64_t in_use, uint64_t budget) {
    return "refused: " + std::to_string(in_use) + " of " + std::to_string(budget);
  };
  {
    const MemoryTracker::Hold h = t.hold(600, refused);
    EXPECT_EQ(t.current(), 0u);
    // Another thread sees the 600 bytes as taken, though nothing is allocated yet.
    std::string other_hold, other_alloc;
    std::thread([&] {
      try {
        const MemoryTracker::Hold h2 = t.hold(500, refused);
      } catch (const Error& e) {
        other_hold = e.what();
      }
      try {
        t.reserve(500, "other");
      } catch (const Error& e) {
        other_alloc = e.what();
      }
      t.reserve(400, "fits beside the hold");
    }).join();
    EXPECT_EQ(other_hold, "refused: 600 of 1000");
    EXPECT_NE(other_alloc.find("device memory budget exceeded: other"), std::string::npos) << other_alloc;
    EXPECT_EQ(t.current(), 400u);
    // This thread's allocations draw from its hold although the budget is otherwise full.
    t.reserve(350, "first");
    t.reserve(250, "second");  // 250 from the hold's last 250
    EXPECT_EQ(t.current(), 1000u);
    EXPECT_THROW(t.reserve(1, "past the hold"), Error);
  }
  // The hold is spent; freeing returns bytes as usual, and an unspent hold returns its rest.
  t.on_free(400), t.on_free(350), t.on_free(250);
  EXPECT_EQ(t.current(), 0u);
  {
    const MemoryTracker::Hold h = t.hold(900, refused);
    t.reserve(100, "some");
  }
  EXPECT_NO_THROW(t.reserve(900, "the rest came back"));
  EXPECT_THROW((void)t.hold(200, refused), Error);
}

// An end-to-end run of the race; the test above is the deterministic proof of the hold (this
// one rarely catches the old two-step check, whose window was microseconds).
TEST(MemoryModel, SessionsCreatedAtOnceUnderABudgetForOneGiveOneSessionAndOneUpFrontRefusal) {
  Context ctx;
  Kernels k(ctx);
  Model m(k, model_path("stories260K.gguf"));
  SessionOptions o;
  o.n_ctx = 2048;  // the cache dominates: one session fits the budget below, two do not
  o.n_batch = 64;
  const uint64_t before = ctx.memory().current();
  uint64_t one = 0;
  {
    Session s(m, o);
    one = ctx.memory().current() - before;
  }
  ctx.memory().set_budget(before + one + one / 2);
  // The check and the allocations were two steps: both threads could pass the check, and one
  // then failed part-way through allocating. Now checking holds the bytes in the same step.
  for (int round = 0; round < 20; ++round) {
    std::optional<Session> s[2];
    std::string err[2];
    std::barrier start(2);
    auto create = [&](int i) {
      start.arrive_and_wait();
      try {
        s[i].emplace(m, o);
      } catch (const Error& e) {
        err[i] = e.what();
      }
    };
    std::thread a(create, 0), b(create, 1);
    a.join(), b.join();
    ASSERT_EQ(int(s[0].has_value()) + int(s[1].has_value()), 1) << "round " << round;
    const std::string& why = s[0] ? err[1] : err[0];
    EXPECT_NE(why.find("does not fit the device memory budget"), std::string::npos) << "round " << round << ": " << why;
    EXPECT_LE(ctx.memory().current(), ctx.memory().budget());
  }
  EXPECT_EQ(ctx.memory().current(), before);
}

// ---- bounds: every figure is exact or an error, never a wrapped sum -------------------------

TEST(MemoryModel, RealModelShapesPassEveryBound) {
  // The bounds must refuse only hostile numbers: the largest shapes in use pass, at 128K, and
  // the memory model's figures are the sums of the buffers a session allocates, counted here
  // from the shapes (an f16 cache; every layer global).
  struct Shape {
    const char* name;
    uint32_t embd, layers, heads, kv_heads, head_dim, ff, vocab, ctx;
  };
  const Shape shapes[] = {
      {"Llama-3.1-8B", 4096, 32, 32, 8, 128, 14336, 128256, 131072},
      {"Llama-3.1-70B", 8192, 80, 64, 8, 128, 28672, 128256, 131072},
      {"Llama-3.1-405B", 16384, 126, 128, 8, 128, 53248, 128256, 131072},
      {"Qwen2-72B", 8192, 80, 64, 8, 128, 29568, 152064, 131072},
      {"Mistral-7B", 4096, 32, 32, 8, 128, 14336, 32000, 32768},
  };
  for (const Shape& m : shapes) {
    ModelConfig c;
    c.arch_name = "llama";
    c.n_embd = m.embd, c.n_layer = m.layers, c.n_head = m.heads, c.n_head_kv = m.kv_heads, c.head_dim = m.head_dim;
    c.n_ff = m.ff, c.n_vocab = m.vocab, c.n_ctx_train = m.ctx, c.n_rot = m.head_dim;
    EXPECT_NO_THROW(c.check()) << m.name;
    SCOPED_TRACE(m.name);
    const uint64_t weights = 200ull << 30, gen = 16, L = m.ctx - gen, B = 512, C = 1024, W = 32;
    MemoryQuery q;
    q.prompt_len = uint32_t(L), q.n_ctx = m.ctx, q.n_batch = uint32_t(B);
    // Per row of the batch: x and its norm, q and attn, k and v, gate and up; then one id per
    // row, the logits, the decode partials (per head, per chunk of 256 positions: head_dim
    // outputs, a max and a sum) and one token's stacked q, k, v. All f32.
    const uint64_t q_dim = uint64_t(m.heads) * m.head_dim, kv_dim = uint64_t(m.kv_heads) * m.head_dim;
    const uint64_t chunks = (uint64_t(m.ctx) + 255) / 256;
    const uint64_t activations = 4 * (B * (2 * m.embd + 2 * q_dim + 2 * kv_dim + 2 * m.ff) + B + m.vocab +
                                      uint64_t(m.heads) * chunks * (m.head_dim + 2) + q_dim + 2 * kv_dim);
    const uint64_t row = 2ull * m.head_dim;  // one f16 K or V row of one head
    const uint64_t full_kv = 2ull * m.layers * m.kv_heads * m.ctx * row;
    MemoryEstimate e;
    ASSERT_NO_THROW(e = estimate_memory(c, weights, q));
    EXPECT_EQ(e.weights, weights);
    EXPECT_EQ(e.activations, activations);
    EXPECT_EQ(e.kv_cache, full_kv);
    EXPECT_EQ(e.kv_full_equivalent, full_kv);
    EXPECT_EQ(e.prefill_transient, 0u);
    EXPECT_EQ(e.peak, weights + activations + full_kv);

    q.kv.policy = KvPolicy::SnapKV, q.kv.budget = uint32_t(C);
    ASSERT_EQ(q.kv.window, W);
    ASSERT_NO_THROW(e = estimate_memory(c, weights, q));
    // C entries and room for the generated tokens per head and layer, and each layer's heads table
    const uint64_t kept_kv = uint64_t(m.layers) * (2ull * m.kv_heads * (C + gen) * row + 8ull * m.kv_heads);
    // the prompt's hidden states, one layer's full K/V and heads table, the window's queries, the
    // prompt's words; then the selection's buffers: two selections of C - W per head and an info
    // table, each query's row max and sum, votes, pooled votes and completed words over P = L - W
    const uint64_t P = L - W;
    const uint64_t transient =
        4 * L * m.embd + 2ull * m.kv_heads * L * row + 8ull * m.kv_heads + 4 * W * q_dim + 4 * L +
        4 * (2 * m.kv_heads * (C - W) + 2ull * m.kv_heads + 2ull * m.heads * W + 3ull * m.kv_heads * P);
    EXPECT_EQ(e.kv_cache, kept_kv);
    EXPECT_EQ(e.kv_full_equivalent, full_kv);
    EXPECT_EQ(e.prefill_transient, transient);
    EXPECT_EQ(e.peak, weights + activations + kept_kv + transient);
    if (std::string(m.name) == "Llama-3.1-8B") {  // docs/profile.md's dry run: 16 GiB against 130 MiB
      EXPECT_EQ(full_kv, 16ull << 30);
      EXPECT_EQ(kept_kv, 130ull * (1 << 20) + 32 * 64);
    }
  }
}

TEST(MemoryModel, SessionShapeProductsFitThirtyTwoBits) {
  ModelConfig c = tiny_config();
  EXPECT_NO_THROW(check_session_shape(c, kMaxContext, 256));
  expect_error([&] { check_session_shape(c, 0, 256); }, "n_ctx 0 is out of range (1..16777216)");
  expect_error([&] { check_session_shape(c, kU32Max, 256); }, "n_ctx 4294967295 is out of range (1..16777216)");
  expect_error([&] { check_session_shape(c, kMaxContext + 1, 256); }, "n_ctx 16777217 is out of range");
  // KV rows of one layer (and heads-table offsets h * n_ctx) are 32-bit: 256 heads * 2^24 = 2^32.
  c.n_head = c.n_head_kv = 256, c.head_dim = 2, c.n_rot = 2;
  EXPECT_NO_THROW(check_session_shape(c, kMaxContext - 1, 1));
  expect_error([&] { check_session_shape(c, kMaxContext, 1); },
               "KV rows per layer n_head_kv * n_ctx (256 * 16777216) overflows 32 bits");
  // One batch's activations are 32-bit element counts: n_batch * n_ff = 4096 * 2^20.
  c = tiny_config();
  c.n_ff = 1u << 20;
  EXPECT_NO_THROW(check_session_shape(c, 4096, 4095));
  expect_error([&] { check_session_shape(c, 4096, 4096); },
               "activations n_batch * n_ff (4096 * 1048576) overflows 32 bits");
  // n_batch counts only up to n_ctx (a session clamps it).
  EXPECT_NO_THROW(check_session_shape(c, 16, kU32Max));
  c = tiny_config();
  c.n_embd = 65536;
  expect_error([&] { check_session_shape(c, 1u << 20, 1u << 20); },
               "activations n_batch * n_embd (1048576 * 65536) overflows 32 bits");
  c = tiny_config();
  c.n_head = c.n_head_kv = 1024, c.head_dim = 256;
  expect_error([&] { check_session_shape(c, 1u << 14, 1u << 14); },
               "activations n_batch * q_dim (16384 * 262144) overflows 32 bits");
}

TEST(MemoryModel, RefusesWhatWouldWrapAndIsExactAtTheEdge) {
  const ModelConfig c = tiny_config();
  auto bad = [&](const std::function<void(MemoryQuery&)>& edit, const std::string& what, uint64_t weights = 0) {
    MemoryQuery q = tiny_query();
    edit(q);
    expect_error([&] { estimate_memory(c, weights, q); }, what);
  };
  bad([](MemoryQuery& q) { q.n_ctx = kU32Max; }, "n_ctx 4294967295 is out of range");
  bad([](MemoryQuery& q) { q.prompt_len = kU32Max; },
      "memory model: prompt length 4294967295 is out of range (0..16777216)");
  bad([](MemoryQuery& q) { q.decode_chunk = 0; },
      "memory model: decode_chunk must be at least 1");  // was a division by zero
  bad([](MemoryQuery& q) { q.kv_types.v = KvType(17); }, "memory model: unknown KV type 17");
  bad([](MemoryQuery& q) { q.kv.policy = KvPolicy::SnapKV, q.kv.budget = 64, q.kv.window = kU32Max; },
      "KV window 4294967295 is too large");
  bad([](MemoryQuery&) {}, "memory model: peak bytes (18446744073709551615 + ", kU64Max);
  // The largest legal shape: every figure is the exact product (it would not fit 32 bits, and
  // the old 2^64-bit sums never get near wrapping).
  ModelConfig big = c;
  big.n_layer = 1024, big.n_head = big.n_head_kv = 255, big.head_dim = 256, big.n_rot = 256, big.n_embd = 16384;
  big.n_ff = 1u << 16, big.n_vocab = 1u << 16;
  MemoryQuery q;
  q.prompt_len = kMaxContext, q.n_ctx = kMaxContext, q.n_batch = 1, q.kv_types = {KvType::F32, KvType::F32};
  const MemoryEstimate e = estimate_memory(big, 0, q);
  EXPECT_EQ(e.kv_full_equivalent, 2ull * 1024 * 255 * kMaxContext * 1024);  // 8.2e15 bytes, not wrapped
  EXPECT_EQ(e.kv_cache, e.kv_full_equivalent);
  EXPECT_EQ(e.peak, e.activations + e.kv_cache);
  EXPECT_EQ(KvCache::full_bytes(big, {KvType::F32, KvType::F32}, kMaxContext), e.kv_full_equivalent);
  expect_error([&] { KvCache::full_bytes(big, {KvType::F32, KvType::F32}, kU64Max); }, "KV cache bytes");
}

}  // namespace
}  // namespace snapvk::test
