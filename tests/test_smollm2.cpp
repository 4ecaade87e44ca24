// Golden tests on a real instruct model: SmolLM2-135M-Instruct Q4_1 (../shared/models), against
// reference/smollm2-prompt-*.json from an independent float64 implementation that reads the same
// file (PROVENANCE.md there): the prompt's token ids, 32 greedy tokens and each step's top-5
// logits and top-2 margin. Greedy tokens must agree up to the reference's first near-tie (where a
// float32 runtime may rightly pick the other token).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "host/model/model.h"
#include "host/report/needle.h"
#include "host/report/perplexity.h"
#include "host/report/texts.h"
#include "host/session/generate.h"
#include "host/session/session.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

constexpr double kNearTie = 0.02;  // a top-2 margin below this may flip in float32

struct Reference {
  std::string text;
  std::vector<int32_t> prompt, generated;
  std::vector<std::vector<std::pair<int32_t, double>>> top;  // [step][5]: id, logit
  std::vector<double> margins;
  size_t trusted = 0;  // steps before the first near-tie
};

Reference load_reference(const std::string& stem) {
  const std::string dir = model_path("reference/");
  std::ifstream jf(dir + stem + ".json"), tf(dir + stem + ".txt", std::ios::binary);
  if (!jf || !tf) throw std::runtime_error("missing reference " + dir + stem + ".json/.txt");
  const nlohmann::json j = nlohmann::json::parse(jf);
  Reference r;
  std::stringstream ss;
  ss << tf.rdbuf();
  r.text = ss.str();
  r.prompt = j.at("prompt_tokens").get<std::vector<int32_t>>();
  r.generated = j.at("generated_tokens").get<std::vector<int32_t>>();
  r.margins = j.at("margins").get<std::vector<double>>();
  for (const auto& step : j.at("top_logits")) {
    auto& s = r.top.emplace_back();
    for (const auto& e : step) s.emplace_back(e.at(0).get<int32_t>(), e.at(1).get<double>());
  }
  while (r.trusted < r.margins.size() && r.margins[r.trusted] >= kNearTie) ++r.trusted;
  return r;
}

const char* const kPrompts[] = {"smollm2-prompt-1", "smollm2-prompt-2", "smollm2-prompt-3", "smollm2-prompt-4-chatml"};

struct SmolLM2 : VkTest {
  static Model& model() {
    // Never destroyed: at exit the validation layer may already be gone (see gpu_fixture.cpp).
    static Model* m = new Model(kernels(), model_path("SmolLM2-135M-Instruct.Q4_1.gguf"));
    return *m;
  }
  // Greedy tokens after the reference prompt, and the logits after the prompt; `step_dev`, when
  // given, receives for each step the largest |logit - reference| over the reference's top 5 of
  // that step (meaningful while the tokens agree, since both then saw the same text).
  static std::vector<int32_t> greedy(const Reference& r, KvType kv, std::vector<float>* first_logits = nullptr,
                                     std::vector<double>* step_dev = nullptr) {
    SessionOptions o;
    o.kv_type_k = o.kv_type_v = kv;
    o.n_ctx = uint32_t(r.prompt.size() + r.generated.size() + 1);
    Session s(model(), o);
    const std::span<const float> logits = s.prefill(r.prompt);
    if (first_logits) first_logits->assign(logits.begin(), logits.end());
    GenerateOptions go;
    go.max_tokens = uint32_t(r.generated.size());
    go.stop_at_eog = false;  // as the reference: no stop at end-of-generation tokens
    go.decode_last = false;
    go.choose = [&](std::span<const float> lg) {
      if (step_dev && step_dev->size() < r.top.size()) {
        double d = 0;
        for (const auto& [id, want] : r.top[step_dev->size()]) d = std::max(d, std::fabs(double(lg[id]) - want));
        step_dev->push_back(d);
      }
      return argmax(lg);
    };
    Sampler unused(SamplerParams{});
    GenerateResult g;
    generate(s, unused, logits, go, g);
    return g.tokens;
  }
};

TEST(SmolLM2Tokenizer, PromptsTokenizeAsTheReference) {
  const GgufFile f = GgufFile::open(model_path("SmolLM2-135M-Instruct.Q4_1.gguf"));
  const Tokenizer tok(vocab_from_gguf(f));
  for (const char* stem : kPrompts) {
    const Reference r = load_reference(stem);
    EXPECT_EQ(tok.encode(r.text, /*add_special=*/false, /*parse_special=*/true), r.prompt) << stem;
  }
}

TEST_F(SmolLM2, GreedyTokensMatchTheFloat64ReferenceWithAnF32Cache) {
  for (const char* stem : kPrompts) {
    const Reference r = load_reference(stem);
    ASSERT_GT(r.trusted, 0u) << stem << ": the reference's first step is a near-tie";
    std::vector<float> logits;
    const std::vector<int32_t> got = greedy(r, KvType::F32, &logits);
    ASSERT_EQ(got.size(), r.generated.size()) << stem;
    for (size_t i = 0; i < r.trusted; ++i) ASSERT_EQ(got[i], r.generated[i]) << stem << " step " << i;
    // The logits after the prompt: the reference's top 5, in float32 over 30 layers of Q4_1.
    for (const auto& [id, want] : r.top[0]) EXPECT_NEAR(logits[id], want, 0.05) << stem << " token " << id;
    if (r.trusted < r.generated.size())
      std::printf("  %s: %zu prompt tokens, first %zu of %zu greedy tokens checked (then a near-tie, margin %.3f)\n",
                  stem, r.prompt.size(), r.trusted, r.generated.size(), r.margins[r.trusted]);
    else
      std::printf("  %s: %zu prompt tokens, all %zu greedy tokens checked\n", stem, r.prompt.size(),
                  r.generated.size());
  }
}

// An f16 cache rounds K and V to 11 significant bits. Measured on these prompts: every one of the
// 32 greedy tokens agrees with the reference, and the logits of the reference's top 5 stay within
// 0.017 of it at every step. The bound, with a 3x margin: within 0.05, and so the tokens agree at
// least up to the first step whose reference margin is below 0.1, the least that such an error
// could flip.
constexpr double kF16LogitTol = 0.05, kF16NearTie = 2 * kF16LogitTol;

TEST_F(SmolLM2, F16CacheLogitsStayCloseAndTokensAgreeUntilACloseCall) {
  for (const char* stem : kPrompts) {
    const Reference r = load_reference(stem);
    std::vector<double> dev;
    const std::vector<int32_t> got = greedy(r, KvType::F16, nullptr, &dev);
    ASSERT_EQ(got.size(), r.generated.size()) << stem;
    ASSERT_EQ(dev.size(), got.size()) << stem;
    size_t same = 0, must = 0;
    while (same < got.size() && got[same] == r.generated[same]) ++same;
    while (must < r.margins.size() && r.margins[must] >= kF16NearTie) ++must;
    EXPECT_GE(same, must) << stem << ": the f16 cache's tokens part from the reference's at step " << same
                          << ", before any step with a margin below " << kF16NearTie;
    double worst = 0;
    for (size_t i = 0; i < same; ++i) {
      EXPECT_LE(dev[i], kF16LogitTol) << stem << " step " << i;
      worst = std::max(worst, dev[i]);
    }
    std::printf("  %s, f16 cache: first %zu of %zu greedy tokens match (%zu required), max |logit diff| %.4f\n", stem,
                same, got.size(), must, worst);
  }
}

// Issue 13's bar, pinned: with the project's defaults and a budget of 128 entries per head (1/8
// of the prompt), SnapKV keeps what SmolLM2 needs to give a 5-digit needle back at every depth of
// a 1K prompt. The paper's setting without word completion (--kv-complete-words 0) missed all
// three (docs/fidelity.md).
TEST_F(SmolLM2, DefaultSnapkvAtBudget128FindsTheNeedleAtEveryDepthOf1K) {
  NeedleOptions o;
  o.contexts = {1024};
  o.depths = {10, 50, 90};
  KvPolicyOptions kv;
  kv.policy = KvPolicy::SnapKV;
  kv.budget = 128;
  o.specs = {ProfileSpec{"snapkv", kv}};
  const NeedleReport r = run_needle(model(), o);
  ASSERT_EQ(r.cells.size(), 3u);
  for (const NeedleCell& c : r.cells)
    EXPECT_TRUE(c.found) << "depth " << c.depth << ": the needle " << c.value << ", the answer '" << c.generated
                         << "' " << c.error;
}

// Every KV type against the full f16 cache on real text: perplexity's KL(full || type), the
// second half of each chunk scored over a cache holding the first. hq4 stores as many bytes per
// row as q4_0 (4.5 bits per value); its rotation spreads K's outlier channels over the whole
// head before quantizing (and its keys are centred), so it must come closer to the f16 cache than
// q4_0 does: a fifth of q4_0's KL on 2 chunks of 256 tokens (the bounds keep a margin of over 2x;
// docs/fidelity.md has the figures on longer chunks).
TEST_F(SmolLM2, RotatedFourBitCacheBeatsQ4_0AtEqualBits) {
  const Model& m = model();
  const std::vector<int32_t> tokens = perplexity_tokens(m, std::string(shipped_texts().front().text));
  PerplexityOptions o;
  o.n_ctx = 256;
  o.max_chunks = 2;
  const KvType types[] = {KvType::Q8_0, KvType::Q4_0, KvType::HQ4, KvType::HQ3};
  for (KvType t : types) o.specs.push_back({std::string("full:") + kv_type_name(t), {}, {t, t}});
  const PerplexityReport r = run_perplexity(m, tokens, "shipped", o);
  ASSERT_EQ(r.rows.size(), 5u);  // the full f16 reference first
  EXPECT_EQ(r.rows[0].kl, 0.0);
  std::map<KvType, double> kl;
  for (size_t i = 0; i < std::size(types); ++i) {
    const PerplexityRow& row = r.rows[i + 1];
    kl[types[i]] = row.kl;
    std::printf("  %-10s KL %.5f nats, top-1 %.3f, ppl %.3f (f16 %.3f)\n", row.policy.c_str(), row.kl, row.top1,
                row.ppl, r.rows[0].ppl);
  }
  ASSERT_EQ(kv_row_bytes(KvType::HQ4, 64), kv_row_bytes(KvType::Q4_0, 64));
  EXPECT_LT(kl[KvType::Q8_0], 0.002);                    // measured 0.0011
  EXPECT_LT(kl[KvType::HQ4], 0.5 * kl[KvType::Q4_0]);    // 0.052 against 0.245 (0.086 before K was centred)
  EXPECT_LT(kl[KvType::HQ3], 1.25 * kl[KvType::Q4_0]);  // 0.198: a bit less per value, less than q4_0's loss
}

}  // namespace
}  // namespace snapvk::test
