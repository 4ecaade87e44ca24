// Session::decode_batch: one forward pass over one token of each of several sessions gives each
// the logits its own decode() gives (matrix products over the rows instead of matrix-vector
// ones: equal up to float rounding), with full and compacted caches of different lengths side
// by side, step after step.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "host/model/model.h"
#include "host/session/sampler.h"
#include "host/session/session.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

class ServeBatch : public VkTest {};

TEST_F(ServeBatch, DecodeBatchEqualsEachSessionsOwnDecode) {
  Model model(k(), model_path("stories260K.gguf"));
  ASSERT_TRUE(DecodeBatch::fits(model));
  SessionOptions full;
  SessionOptions snap;
  snap.kv.policy = KvPolicy::SnapKV;
  snap.kv.budget = 24;
  snap.kv.window = 8;
  const std::vector<std::string> prompts = {
      "Once upon a time", "Lily and Tom went to the park to play with a big red ball and a small dog",
      "The sun was hot. The bird sang a song in the tall green tree near the river, and the fish swam", "Tim"};
  const std::vector<SessionOptions> opts = {full, full, snap, snap};
  std::vector<std::unique_ptr<Session>> alone, batched;
  std::vector<int32_t> next;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::vector<int32_t> toks = model.tokenizer().encode(prompts[i], true);
    alone.push_back(std::make_unique<Session>(model, opts[i]));
    batched.push_back(std::make_unique<Session>(model, opts[i]));
    next.push_back(argmax(alone.back()->prefill(toks)));
    batched.back()->prefill(toks);
  }
  // The snapkv session with the long prompt was compacted: its cache holds fewer rows than tokens.
  EXPECT_LT(batched[2]->kv_stats().retained_bytes, batched[2]->kv_stats().full_bytes);
  DecodeBatch b(model, 4);
  std::vector<Session*> ss;
  for (auto& s : batched) ss.push_back(s.get());
  for (int step = 0; step < 6; ++step) {
    Session::decode_batch(b, ss, next);
    for (size_t i = 0; i < ss.size(); ++i) {
      SCOPED_TRACE("step " + std::to_string(step) + ", session " + std::to_string(i));
      const std::span<const float> want = alone[i]->decode(next[i]);
      const std::span<const float> got = ss[i]->logits();
      ASSERT_EQ(got.size(), want.size());
      float worst = 0, scale = 1;
      for (size_t j = 0; j < want.size(); ++j)
        worst = std::max(worst, std::abs(got[j] - want[j])), scale = std::max(scale, std::abs(want[j]));
      EXPECT_LT(worst, 1e-3f * scale);
      EXPECT_EQ(ss[i]->n_past(), alone[i]->n_past());
      next[i] = argmax(want);  // both follow the same tokens
    }
  }
  // A batch of some of them, in another order, goes on from where each one is.
  std::vector<Session*> two = {ss[3], ss[0]};
  std::vector<int32_t> t2 = {next[3], next[0]};
  Session::decode_batch(b, two, t2);
  for (size_t i : {3, 0}) {
    const std::span<const float> want = alone[i]->decode(next[i]);
    EXPECT_EQ(argmax(ss[i]->logits()), argmax(want));
  }
  // More sessions than the batch holds, or a token outside the vocabulary: a clear error.
  std::vector<Session*> five = {ss[0], ss[1], ss[2], ss[3], ss[0]};
  EXPECT_THROW(Session::decode_batch(b, five, std::vector<int32_t>(5, 1)), Error);
  EXPECT_THROW(Session::decode_batch(b, two, std::vector<int32_t>{1, -1}), Error);
}

}  // namespace
}  // namespace snapvk::test
