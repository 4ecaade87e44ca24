// SnapKV and family: GPU selection against the CPU reference (kernel level on synthetic
// shapes, and end to end on stories260K), and the properties each policy promises.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "host/ref/ref_model.h"
#include "host/ref/snapkv_ref.h"
#include "host/session/sampler.h"
#include "host/session/session.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

std::vector<float> gaussian(size_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// GPU and CPU selections agree, except where the two disagree on scores that tie with the
// selection boundary to within `tol` (relative): fp32 sums in another order may flip those.
void expect_same_selection(const std::vector<uint32_t>& gpu, const std::vector<uint32_t>& cpu, const double* scores,
                           uint32_t n, uint32_t count, double tol, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  if (gpu == cpu) return;
  ASSERT_NE(scores, nullptr) << what << ": selections differ";
  std::vector<double> sorted(scores, scores + n);
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  const double boundary = sorted[count - 1];
  std::vector<uint32_t> diff;
  std::set_symmetric_difference(gpu.begin(), gpu.end(), cpu.begin(), cpu.end(), std::back_inserter(diff));
  for (uint32_t p : diff)
    EXPECT_LE(std::fabs(scores[p] - boundary), tol * std::max(1e-30, std::fabs(boundary)))
        << what << ": position " << p << " differs and is not a near-tie (score " << scores[p] << ", boundary "
        << boundary << ")";
}

struct Shape {
  uint32_t hd, group, n_kv, L, W, kernel, C;
  bool avg;
  GqaAgg agg;
  uint32_t ahead = 0;  // pooling reach after a voted position (0: the paper's)
  uint32_t words = 0;  // word completion reach (0: none), over random words
  bool split = false;  // votes, pooling and word completion in passes of a few queries or positions
};
// "hd64_g4_kv2_L333_W31_k7_C99_max_gqamax_ahead9_words3": the test's name and its printed parameter
std::string shape_name(const Shape& s) {
  const char* agg = s.agg == GqaAgg::Mean ? "mean" : s.agg == GqaAgg::Max ? "max" : "sum";
  std::string n = "hd" + std::to_string(s.hd) + "_g" + std::to_string(s.group) + "_kv" + std::to_string(s.n_kv) + "_L" +
                  std::to_string(s.L) + "_W" + std::to_string(s.W) + "_k" + std::to_string(s.kernel) + "_C" +
                  std::to_string(s.C) + (s.avg ? "_avg" : "_max") + "_gqa" + agg;
  if (s.ahead) n += "_ahead" + std::to_string(s.ahead);
  if (s.words) n += "_words" + std::to_string(s.words);
  if (s.split) n += "_split";
  return n;
}
void PrintTo(const Shape& s, std::ostream* os) { *os << shape_name(s); }

class SnapkvKernels : public VkTest, public ::testing::WithParamInterface<Shape> {};

// window_stats + window_votes + pool + topk_select + kv_gather against the CPU reference.
TEST_P(SnapkvKernels, SelectionAndGatherMatchReference) {
  const Shape s = GetParam();
  const uint32_t n_head = s.n_kv * s.group, W = std::min(s.W, s.L), P = s.L - W, count = s.C - W;
  AttentionKernels ak(ctx(), k().tuning, s.hd, s.group);
  if (s.split) {  // the passes a long prompt needs (loop_bounds.h), here over a short one
    ak.votes_pass = 4;
    ak.pool_pass = 2;
    ak.words_pass = 1;
  }
  auto q = gaussian(size_t(W) * n_head * s.hd, 11 + s.L, 1.5f);
  auto keys = gaussian(size_t(s.n_kv) * s.L * s.hd, 12 + s.L);
  auto vals = gaussian(size_t(s.n_kv) * s.L * s.hd, 13 + s.L);
  std::vector<uint32_t> table(2 * s.n_kv);
  for (uint32_t h = 0; h < s.n_kv; ++h) table[2 * h] = h * s.L, table[2 * h + 1] = 0;
  Buffer Q = upload(q), K = upload(keys), V = upload(vals), heads = upload(table);
  Buffer stats(ctx(), size_t(n_head) * W * 8), votes(ctx(), size_t(s.n_kv) * P * 4),
      pooled(ctx(), size_t(s.n_kv) * P * 4), completed(ctx(), size_t(s.n_kv) * P * 4),
      sums(ctx(), size_t(n_head) * P * 4);
  // words of 1 to 6 tokens
  std::vector<uint32_t> words(s.L, 0);
  std::mt19937 rng(s.L);
  for (uint32_t i = 0; i < s.L;) {
    const uint32_t len = 1 + rng() % 6;
    for (uint32_t j = 1; j < len && i + j < s.L; ++j) words[i + j] = 1;
    i += len;
  }
  Buffer Words = upload(word_numbers(words));
  Buffer sel(ctx(), std::max<size_t>(1, size_t(s.n_kv) * count) * 4);
  // compacted cache: count selected + W window rows per head, then 3 spare slots
  const uint32_t per_head = s.C + 3;
  std::vector<uint32_t> out_table(2 * s.n_kv), info(2 * s.n_kv);
  for (uint32_t h = 0; h < s.n_kv; ++h)
    out_table[2 * h] = h * per_head, out_table[2 * h + 1] = s.C, info[2 * h] = h * count;
  Buffer out_heads = upload(out_table), sel_info = upload(info);
  Buffer outK(ctx(), size_t(s.n_kv) * per_head * s.hd * 4), outV(ctx(), size_t(s.n_kv) * per_head * s.hd * 4);

  const float scale = 1.0f / std::sqrt(float(s.hd));
  CommandStream cs(ctx());
  cs.begin();
  op_window_stats(cs, k(), ak, KvType::F32, Q, K, heads, stats, s.L, W, n_head, s.n_kv, scale);
  cs.barrier();
  op_window_votes(cs, k(), ak, KvType::F32, Q, K, stats, votes, heads, sums, s.L, W, P, n_head, s.n_kv, scale, s.agg);
  cs.barrier();
  op_pool(cs, k(), ak, votes, pooled, P, s.n_kv, s.kernel, s.avg, s.ahead);
  cs.barrier();
  if (s.words) {
    op_complete_words(cs, k(), ak, pooled, Words, completed, P, s.n_kv, s.words);
    cs.barrier();
  }
  op_topk(cs, k(), ak, s.words ? completed : pooled, sel, s.n_kv, P, count);
  cs.barrier();
  op_kv_gather(cs, k(), ak, K, V, outK, outV, sel, sel_info, out_heads, s.n_kv, {KvType::F32, KvType::F32}, s.C, s.L, P,
               W);
  cs.submit();

  auto want_votes = ref::window_votes(q, keys, s.L, W, P, n_head, s.n_kv, s.hd, s.agg);
  auto want_pooled = ref::pool1d(want_votes, P, s.n_kv, s.kernel, s.avg, s.ahead);
  auto got_votes = download<float>(votes, want_votes.size());
  auto got_pooled = download<float>(pooled, want_pooled.size());
  for (size_t i = 0; i < want_votes.size(); ++i) {
    ASSERT_NEAR(got_votes[i], want_votes[i], 1e-5 + 1e-4 * std::fabs(want_votes[i])) << "vote " << i;
    ASSERT_NEAR(got_pooled[i], want_pooled[i], 1e-5 + 1e-4 * std::fabs(want_pooled[i])) << "pooled " << i;
  }
  if (s.words) {  // the completed scores rank the selection from here on
    want_pooled = ref::complete_words(want_pooled, P, s.n_kv, words, s.words);
    auto got = download<float>(completed, want_pooled.size());
    for (size_t i = 0; i < want_pooled.size(); ++i)
      ASSERT_NEAR(got[i], want_pooled[i], 1e-5 + 1e-4 * std::fabs(want_pooled[i])) << "completed " << i;
  }
  auto got_sel = download<uint32_t>(sel, size_t(s.n_kv) * count);
  auto gk = download<float>(outK, size_t(s.n_kv) * per_head * s.hd), gv = download<float>(outV, gk.size());
  for (uint32_t h = 0; h < s.n_kv; ++h) {
    std::vector<uint32_t> g(got_sel.begin() + h * count, got_sel.begin() + (h + 1) * count);
    auto c = ref::topk(want_pooled.data() + size_t(h) * P, P, count);
    expect_same_selection(g, c, want_pooled.data() + size_t(h) * P, P, count, 1e-4, "head " + std::to_string(h));
    // the compacted rows are the selected positions, then the window, bit for bit
    for (uint32_t i = 0; i < s.C; ++i) {
      const uint32_t pos = i < count ? g[i] : P + (i - count);
      for (uint32_t d = 0; d < s.hd; ++d) {
        ASSERT_EQ(gk[(size_t(h) * per_head + i) * s.hd + d], keys[(size_t(h) * s.L + pos) * s.hd + d]);
        ASSERT_EQ(gv[(size_t(h) * per_head + i) * s.hd + d], vals[(size_t(h) * s.L + pos) * s.hd + d]);
      }
    }
  }
}

// Odd L, W, k and C; C - W = 1; head_dim 8, 64, 128; GQA groups 1, 2, 4, 8; both poolings and every aggregation.
INSTANTIATE_TEST_SUITE_P(Shapes, SnapkvKernels,
                         ::testing::Values(Shape{8, 2, 4, 101, 7, 5, 33, false, GqaAgg::Mean},
                                           Shape{8, 1, 3, 57, 5, 3, 6, true, GqaAgg::Mean},
                                           Shape{64, 4, 2, 333, 31, 7, 99, false, GqaAgg::Max},
                                           Shape{64, 8, 1, 257, 16, 9, 17, true, GqaAgg::Sum},
                                           Shape{128, 2, 2, 517, 32, 7, 129, false, GqaAgg::Mean},
                                           Shape{128, 1, 4, 1000, 9, 1, 10, true, GqaAgg::Sum},
                                           // pooling that reaches ahead of a vote, both kinds, odd reach
                                           Shape{64, 3, 3, 411, 13, 7, 77, false, GqaAgg::Mean, 9},
                                           Shape{8, 2, 2, 93, 5, 5, 21, true, GqaAgg::Max, 3},
                                           // word completion, with and without reaching ahead, reach 1 to 8
                                           Shape{64, 3, 3, 411, 13, 7, 77, false, GqaAgg::Mean, 4, 3},
                                           Shape{8, 1, 3, 57, 5, 3, 6, true, GqaAgg::Mean, 0, 8},
                                           Shape{128, 1, 4, 1001, 9, 1, 10, false, GqaAgg::Sum, 0, 1},
                                           // 33K keys at head_dim 256: past llvmpipe's per-invocation loop limit
                                           // when the head_dim loop of window_stats was not unrolled
                                           Shape{256, 4, 1, 33001, 32, 7, 257, false, GqaAgg::Mean},
                                           // votes, pooling and word completion in passes (every aggregation,
                                           // both poolings), as the longest prompts take them
                                           Shape{64, 4, 2, 333, 31, 7, 99, false, GqaAgg::Max, 9, 3, true},
                                           Shape{8, 2, 2, 93, 5, 5, 21, true, GqaAgg::Mean, 3, 2, true},
                                           Shape{128, 1, 4, 1001, 9, 3, 10, true, GqaAgg::Sum, 0, 1, true}),
                         [](const auto& info) { return shape_name(info.param); });

// The reach ahead of pool1d itself: a lone vote at j lends to j - k/2 .. j + k/2 + ahead, and
// avg divides by k + ahead.
TEST(PoolReference, ReachAheadExtendsAfterAVote) {
  const uint32_t P = 40, j = 10;
  std::vector<double> v(P, 0.0);
  v[j] = 1.0;
  for (bool avg : {false, true}) {
    const auto sym = ref::pool1d(v, P, 1, 5, avg), fwd = ref::pool1d(v, P, 1, 5, avg, 6);
    for (uint32_t i = 0; i < P; ++i) {
      const bool in_sym = i + 2 >= j && i <= j + 2, in_fwd = i + 2 >= j && i <= j + 2 + 6;
      EXPECT_EQ(sym[i] > 0, in_sym) << i;
      EXPECT_EQ(fwd[i] > 0, in_fwd) << i;
      if (in_fwd) {
        EXPECT_DOUBLE_EQ(fwd[i], avg ? 1.0 / 11 : 1.0) << i;
      }
    }
  }
}

// Word completion: a position takes the best score of its word, at most `reach` either way;
// words do not reach across a position that starts a word.
TEST(CompleteWordsReference, AWordTakesItsBestScoreWithinReach) {
  //                          0  1  2  3  4  5  6  7  8  9
  const std::vector<uint32_t> w{0, 0, 1, 1, 1, 1, 0, 1, 0, 0};  // words: 0 | 1-5 | 6-7 | 8 | 9
  std::vector<double> v(10, 0.0);
  v[3] = 1.0, v[6] = 0.5, v[0] = 0.25;
  const auto all = ref::complete_words(v, 10, 1, w, 8);
  EXPECT_EQ(all, (std::vector<double>{0.25, 1, 1, 1, 1, 1, 0.5, 0.5, 0, 0}));
  const auto one = ref::complete_words(v, 10, 1, w, 1);
  EXPECT_EQ(one, (std::vector<double>{0.25, 0, 1, 1, 1, 0, 0.5, 0.5, 0, 0}));
  EXPECT_EQ(ref::complete_words(v, 10, 1, w, 0), v);
  // two heads are independent rows
  std::vector<double> two(20, 0.0);
  two[13] = 2.0;
  const auto t = ref::complete_words(two, 10, 2, w, 8);
  EXPECT_EQ(std::vector<double>(t.begin(), t.begin() + 10), std::vector<double>(10, 0.0));
  EXPECT_EQ(std::vector<double>(t.begin() + 10, t.end()), (std::vector<double>{0, 2, 2, 2, 2, 2, 0, 0, 0, 0}));
}

// Ties: equal scores keep the lower positions, and every kept position is reported in order.
TEST_F(SnapkvKernels, TopkBreaksTiesTowardLowerPositions) {
  AttentionKernels ak(ctx(), k().tuning, 8, 1);
  const uint32_t n = 1003;
  std::vector<float> s(n);
  for (uint32_t i = 0; i < n; ++i) s[i] = float((i * 7919) % 13);  // many equal values
  Buffer S = upload(s), sel(ctx(), 4 * 500);
  for (uint32_t count : {1u, 77u, 500u}) {
    CommandStream cs(ctx());
    cs.begin();
    op_topk(cs, k(), ak, S, sel, 1, n, count);
    cs.submit();
    std::vector<double> d(s.begin(), s.end());
    EXPECT_EQ(download<uint32_t>(sel, count), ref::topk(d.data(), n, count)) << "count " << count;
  }
}

// H2O's votes: every prompt query votes (n_q = L), against the CPU reference. One invocation of
// window_votes walks all voting queries of its key for every query head of its group; llvmpipe
// ends every loop of an invocation after 65535 iterations in all (docs/reliability.md, "Loop
// limits"), which at GQA 16 and head_dim 32 cut the votes short before 3,500 queries (~770 at
// head_dim 256; at 8 Mesa unrolls enough itself). Now 3,500 queries take two passes.
TEST_F(SnapkvKernels, H2oVotesOfEveryPromptQueryMatchReference) {
  const uint32_t hd = 32, G = 16, n_kv = 1, n_head = G * n_kv, L = 3500, n_q = L, P = L - 32;
  AttentionKernels ak(ctx(), k().tuning, hd, G);
  auto q = gaussian(size_t(n_q) * n_head * hd, 31, 1.5f), keys = gaussian(size_t(n_kv) * L * hd, 32);
  Buffer Q = upload(q), K = upload(keys), heads = upload(std::vector<uint32_t>{0, 0});
  Buffer stats(ctx(), size_t(n_head) * n_q * 8), votes(ctx(), size_t(n_kv) * P * 4),
      sums(ctx(), size_t(n_head) * P * 4);
  const float scale = 1.0f / std::sqrt(float(hd));
  CommandStream cs(ctx());
  cs.begin();
  op_window_stats(cs, k(), ak, KvType::F32, Q, K, heads, stats, L, n_q, n_head, n_kv, scale);
  cs.barrier();
  op_window_votes(cs, k(), ak, KvType::F32, Q, K, stats, votes, heads, sums, L, n_q, P, n_head, n_kv, scale,
                  GqaAgg::Max);
  cs.submit();
  const auto want = ref::window_votes(q, keys, L, n_q, P, n_head, n_kv, hd, GqaAgg::Max);
  const auto got = download<float>(votes, want.size());
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 1e-5 + 1e-4 * std::fabs(want[i])) << "vote " << i;
}

// Ada-KV's layer-wide selection at 128K tokens and 8 KV heads: one segment of 2^20 scores. Each
// invocation of topk_select walks its share of the segment six times; at lavapipe's 64
// invocations that was 98,000 loop iterations, past llvmpipe's 65535 (docs/reliability.md,
// "Loop limits"), and the selection came out wrong without an error.
TEST_F(SnapkvKernels, TopkOverAMillionScoresMatchesReference) {
  AttentionKernels ak(ctx(), k().tuning, 8, 1);
  const uint32_t n = 1u << 20, count = 5000;
  const auto s = gaussian(n, 41);
  Buffer S = upload(s), sel(ctx(), 4 * count);
  CommandStream cs(ctx());
  cs.begin();
  op_topk(cs, k(), ak, S, sel, 1, n, count);
  cs.submit();
  const std::vector<double> d(s.begin(), s.end());
  EXPECT_EQ(download<uint32_t>(sel, count), ref::topk(d.data(), n, count));
}

// Pooling and word completion reaching across 70,000 and 66,000 positions: one invocation
// walked the whole window (pooling) or the word both ways (completion), past llvmpipe's loop
// limit (docs/reliability.md, "Loop limits"); now in passes.
TEST_F(SnapkvKernels, PoolingAndWordsAcrossTheLoopLimitMatchReference) {
  AttentionKernels ak(ctx(), k().tuning, 8, 1);
  const uint32_t P = 70000, ahead = P, reach = 66000;
  auto v = random_floats(P, 71, 0.0f, 1.0f);
  v[reach] = 2.0f;                    // the best of the long word at its far end: a walk cut short misses it
  std::vector<uint32_t> words(P, 1);  // one word of reach + 1 tokens, then words of one
  for (uint32_t t = reach + 1; t < P; ++t) words[t] = 0;
  words[0] = 0;
  Buffer votes = upload(v), pooled(ctx(), P * 4ull), completed(ctx(), P * 4ull), Words = upload(word_numbers(words));
  CommandStream cs(ctx());
  cs.begin();
  op_pool(cs, k(), ak, votes, pooled, P, 1, 1, true, ahead);  // each position pools all before it
  cs.barrier();
  op_complete_words(cs, k(), ak, votes, Words, completed, P, 1, reach);
  cs.submit();
  const std::vector<double> vd(v.begin(), v.end());
  const auto want_pooled = ref::pool1d(vd, P, 1, 1, true, ahead);
  const auto want_completed = ref::complete_words(vd, P, 1, words, reach);
  const auto got_pooled = download<float>(pooled, P), got_completed = download<float>(completed, P);
  uint32_t bad_pooled = 0, bad_completed = 0, first_pooled = P, first_completed = P;
  for (uint32_t j = 0; j < P; ++j) {
    if (std::fabs(got_pooled[j] - want_pooled[j]) > 1e-6 + 1e-4 * want_pooled[j])
      ++bad_pooled, first_pooled = std::min(first_pooled, j);
    if (got_completed[j] != float(want_completed[j])) ++bad_completed, first_completed = std::min(first_completed, j);
  }
  EXPECT_EQ(bad_pooled, 0u) << "pooled wrong from position " << first_pooled;
  EXPECT_EQ(bad_completed, 0u) << "completed wrong from position " << first_completed;
}

// ---- end to end on stories260K ----

struct SnapkvStories : VkTest {
  static Model& model() {
    // Never destroyed: at exit the validation layer may already be gone (see gpu_fixture.cpp).
    static Model* m = new Model(kernels(), model_path("stories260K.gguf"));
    return *m;
  }
  static std::vector<int32_t> prompt() {
    std::string text;
    for (int i = 0; i < 3; ++i)
      text +=
          "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
          "One day, she saw a big red ball and a small cat. ";
    return model().tokenizer().encode(text, true);
  }
  static SessionOptions options(KvPolicy p, uint32_t budget, uint32_t window) {
    SessionOptions o;
    o.n_ctx = 400;
    o.n_batch = 32;
    o.kv_type_k = o.kv_type_v = KvType::F32;
    o.kv.policy = p;
    o.kv.budget = budget;
    o.kv.window = window;
    o.keep_selection = true;
    return o;
  }
};

// The selection the GPU made for every layer and head equals the CPU reference's, computed
// from a CPU forward pass of the same prompt.
TEST_F(SnapkvStories, SelectionMatchesCpuReferenceForEveryPolicy) {
  const auto& cfg = model().config();
  const auto tokens = prompt();
  const uint32_t L = uint32_t(tokens.size());
  RefModel ref(model().gguf(), cfg, 512);
  for (int32_t t : tokens) ref.forward(t);
  struct Case {
    KvPolicy policy;
    uint32_t kernel;
    bool avg;
    GqaAgg agg;
    uint32_t words = 0;
    uint32_t ahead = 0;
  };
  const std::vector<uint32_t> words = model().tokenizer().word_continuations(tokens);
  for (Case cs : {Case{KvPolicy::SnapKV, 7, false, GqaAgg::Mean}, Case{KvPolicy::SnapKV, 5, true, GqaAgg::Max},
                  Case{KvPolicy::SnapKV, 3, false, GqaAgg::Sum}, Case{KvPolicy::PyramidKV, 7, false, GqaAgg::Mean},
                  Case{KvPolicy::H2O, 7, false, GqaAgg::Mean}, Case{KvPolicy::StreamingLLM, 7, false, GqaAgg::Mean},
                  Case{KvPolicy::AdaKV, 7, false, GqaAgg::Mean}, Case{KvPolicy::SnapKV, 7, false, GqaAgg::Mean, 4},
                  Case{KvPolicy::AdaKV, 5, true, GqaAgg::Mean, 2}, Case{KvPolicy::SnapKV, 1, false, GqaAgg::Mean, 0, 6},
                  Case{KvPolicy::PyramidKV, 7, true, GqaAgg::Mean, 4, 4}}) {
    SessionOptions o = options(cs.policy, 64, 8);
    o.kv.kernel = cs.kernel;
    o.kv.pool = cs.avg ? KvPool::Avg : KvPool::Max;
    o.kv.gqa = cs.agg;
    o.kv.complete_words = cs.words;
    o.kv.pool_ahead = cs.ahead;
    // n_batch 32, and L - 1: the prompt's last batch is then one token, run as a decode step
    for (uint32_t n_batch : {32u, L - 1}) {
      o.n_batch = n_batch;
      Session s(model(), o);
      s.prefill(tokens);
      ASSERT_EQ(s.selection().size(), cfg.n_layer);
      for (uint32_t l = 0; l < cfg.n_layer; ++l) {
        // keys as [n_kv][L][hd] from the reference's [pos][n_kv][hd]
        const auto& kc = ref.k_cache(l);
        std::vector<float> keys(kc.size());
        for (uint32_t p = 0; p < L; ++p)
          for (uint32_t h = 0; h < cfg.n_head_kv; ++h)
            for (uint32_t d = 0; d < cfg.head_dim; ++d)
              keys[(size_t(h) * L + p) * cfg.head_dim + d] = kc[(size_t(p) * cfg.n_head_kv + h) * cfg.head_dim + d];
        std::vector<double> scores;
        auto want = ref::select_layer(o.kv, l, cfg.n_layer, ref.q_history(l), keys, L, cfg.n_head, cfg.n_head_kv,
                                      cfg.head_dim, &scores, &words);
        const uint32_t C = o.kv.layer_budgets(L, cfg.n_layer)[l];
        const uint32_t P = L - o.kv.window;
        const std::string what = std::string(kv_policy_name(cs.policy)) + " n_batch " + std::to_string(n_batch) +
                               " layer " + std::to_string(l);
        if (cs.policy == KvPolicy::AdaKV) {
          // one layer-wide selection: compare the union in [n_kv][P] space
          std::vector<uint32_t> g, c;
          for (uint32_t h = 0; h < cfg.n_head_kv; ++h) {
            for (uint32_t p : s.selection()[l][h])
              if (p < P) g.push_back(h * P + p);
            for (uint32_t p : want[h])
              if (p < P) c.push_back(h * P + p);
          }
          expect_same_selection(g, c, scores.data(), cfg.n_head_kv * P, uint32_t(c.size()), 1e-4, what);
          continue;
        }
        for (uint32_t h = 0; h < cfg.n_head_kv; ++h) {
          if (scores.empty()) {
            EXPECT_EQ(s.selection()[l][h], want[h]) << what;
            continue;
          }
          std::vector<uint32_t> g, c;
          for (uint32_t p : s.selection()[l][h])
            if (p < P) g.push_back(p);
          for (uint32_t p : want[h])
            if (p < P) c.push_back(p);
          expect_same_selection(g, c, scores.data() + size_t(h) * P, P, C - o.kv.window, 1e-4,
                                what + " head " + std::to_string(h));
        }
      }
    }
  }
}

std::vector<int32_t> greedy(Session& s, const std::vector<int32_t>& prompt, int n) {
  std::vector<int32_t> out;
  auto logits = s.prefill(prompt);
  for (int i = 0; i < n; ++i) {
    out.push_back(argmax(logits));
    logits = s.decode(out.back());
  }
  return out;
}

// A budget that holds the whole prompt changes nothing: the same tokens as the full cache.
TEST_F(SnapkvStories, BudgetAtLeastPromptIsTokenIdenticalToFull) {
  const auto tokens = prompt();
  Session full(model(), options(KvPolicy::Full, 0, 8));
  const auto want = greedy(full, tokens, 40);
  for (KvPolicy p : {KvPolicy::SnapKV, KvPolicy::PyramidKV, KvPolicy::H2O, KvPolicy::AdaKV, KvPolicy::StreamingLLM}) {
    Session s(model(), options(p, uint32_t(tokens.size()) + 3, 8));
    EXPECT_EQ(greedy(s, tokens, 40), want) << kv_policy_name(p);
  }
}

// With C < L, decoding attends exactly the retained entries plus the new tokens: the logits
// equal a CPU forward pass whose attention sees only those positions.
TEST_F(SnapkvStories, DecodeOverCompactedCacheEqualsCpuAttentionOverRetainedSet) {
  const auto& cfg = model().config();
  const auto tokens = prompt();
  for (KvPolicy p : {KvPolicy::SnapKV, KvPolicy::AdaKV, KvPolicy::StreamingLLM}) {
    Session s(model(), options(p, 48, 8));
    auto logits = s.prefill(tokens);
    RefModel ref(model().gguf(), cfg, 512);
    std::vector<float> want;
    for (int32_t t : tokens) want = ref.forward(t);
    ref.restrict_prompt(uint32_t(tokens.size()), s.selection());
    for (int step = 0; step < 12; ++step) {
      const int32_t next = argmax(logits);
      logits = s.decode(next);
      want = ref.forward(next);
      EXPECT_LE(max_abs_diff(std::vector<float>(logits.begin(), logits.end()), want), 1e-4f)
          << kv_policy_name(p) << " step " << step;
    }
    const KvStats st = s.kv_stats();
    EXPECT_LT(st.retained_bytes, st.full_bytes);
  }
}

TEST_F(SnapkvStories, StreamingLlmKeepsExactlySinksAndRecent) {
  const auto tokens = prompt();
  const uint32_t L = uint32_t(tokens.size()), C = 40, W = 8;
  Session s(model(), options(KvPolicy::StreamingLLM, C, W));
  s.prefill(tokens);
  std::vector<uint32_t> want;
  for (uint32_t i = 0; i < 4; ++i) want.push_back(i);
  for (uint32_t p = L - (C - 4); p < L; ++p) want.push_back(p);
  for (const auto& layer : s.selection())
    for (const auto& head : layer) EXPECT_EQ(head, want);
}

TEST_F(SnapkvStories, AdaKvBudgetsSumToTheLayerTotal) {
  const auto& cfg = model().config();
  const auto tokens = prompt();
  const uint32_t C = 48, W = 8;
  Session s(model(), options(KvPolicy::AdaKV, C, W));
  s.prefill(tokens);
  bool uneven = false;
  for (uint32_t l = 0; l < cfg.n_layer; ++l) {
    uint32_t total = 0;
    for (uint32_t h = 0; h < cfg.n_head_kv; ++h) {
      const auto& sel = s.selection()[l][h];
      total += uint32_t(sel.size());
      EXPECT_GE(sel.size(), W + uint32_t(0.2f * (C - W))) << "layer " << l << " head " << h << " below the floor";
      EXPECT_EQ(s.cache().layer(l).base[h], sel.size());
      uneven |= sel.size() != C;
    }
    EXPECT_EQ(total, cfg.n_head_kv * C) << "layer " << l;
  }
  EXPECT_TRUE(uneven) << "Ada-KV gave every head the same budget";
}

TEST_F(SnapkvStories, PyramidBudgetsFallLinearlyWithTheSameTotal) {
  KvPolicyOptions o;
  o.policy = KvPolicy::PyramidKV;
  o.budget = 1024;
  o.window = 32;
  auto b = o.layer_budgets(10000, 32);
  EXPECT_GT(b.front(), b.back());
  for (size_t i = 1; i < b.size(); ++i) EXPECT_LE(b[i], b[i - 1]);
  const uint32_t lo = (1024 - 32) / 20, hi = 2 * (1024 - 32) - lo;  // the reference's min and max
  EXPECT_EQ(b.front(), hi + 32);
  EXPECT_GE(b.back(), lo + 32);
  EXPECT_EQ(o.layer_budgets(900, 32), std::vector<uint32_t>(32, 1024u));  // a prompt within budget is kept whole
  uint64_t total = 0;
  for (auto x : b) total += x;
  EXPECT_NEAR(double(total) / b.size(), 1024.0, 16.0);  // the same total as uniform, up to integer steps
}

TEST(SnapkvOptions, InvalidCombinationsAreRejected) {
  auto bad = [](auto mutate, const char* needle) {
    KvPolicyOptions o;
    o.policy = KvPolicy::SnapKV;
    o.budget = 64;
    o.window = 8;
    mutate(o);
    try {
      o.validate();
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_EQ(e.kind(), ErrorKind::InvalidArgument) << e.what();
    }
  };
  bad([](KvPolicyOptions& o) { o.kernel = 4; }, "odd");
  bad([](KvPolicyOptions& o) { o.window = 64; }, "smaller than the KV budget");
  bad([](KvPolicyOptions& o) { o.budget = 0; }, "KV ratio");
  bad([](KvPolicyOptions& o) { o.ratio = 0.5f; }, "not both");
  bad([](KvPolicyOptions& o) { o.budget = 0, o.ratio = 1.5f; }, "KV ratio");
  bad([](KvPolicyOptions& o) { o.window = 0; }, "at least 1");
  bad([](KvPolicyOptions& o) { o.policy = KvPolicy::StreamingLLM, o.budget = 10; }, "sink");
  bad([](KvPolicyOptions& o) { o.complete_words = 1u << 30; }, "word completion reach");
}

}  // namespace
}  // namespace snapvk::test
