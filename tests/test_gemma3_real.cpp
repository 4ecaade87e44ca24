// Gemma 3 270M (Q4_K_M: Q5_0, Q4_K, Q6_K, Q8_0 and F32 tensors, 262K-token SentencePiece vocabulary,
// sliding-window layers), fetched by tools/fetch-models.sh. It is the base model, not the
// instruct one: plain completions are what it answers sensibly. A missing file fails the tests,
// naming the command that fetches it.
#include <gtest/gtest.h>

#include <string>

#include "host/model/model.h"
#include "host/session/generate.h"
#include "host/session/session.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

constexpr const char* kGemma = "gemma-3-270m-q4_k_m.gguf";

struct Gemma3Real : VkTest {
  static Model* model() {
    // Never destroyed: at exit the validation layer may already be gone (see gpu_fixture.cpp).
    static Model* m = fetched_model_path(kGemma).empty() ? nullptr : new Model(kernels(), fetched_model_path(kGemma));
    return m;
  }
  // The greedy continuation of `prompt` (BOS added), n tokens at most.
  static std::string complete(const std::string& prompt, uint32_t n, const KvPolicyOptions& kv = {},
                              KvStats* stats = nullptr) {
    const std::vector<int32_t> tokens = model()->tokenizer().encode(prompt, true);
    SessionOptions o;
    o.n_ctx = uint32_t(tokens.size()) + n;
    o.kv = kv;
    Session s(*model(), o);
    GenerateOptions go;
    go.max_tokens = n;
    go.decode_last = false;
    go.choose = [](std::span<const float> lg) { return argmax(lg); };
    Sampler unused(SamplerParams{});
    GenerateResult g;
    generate(s, unused, s.prefill(tokens), go, g);
    if (stats) *stats = s.kv_stats();
    return g.text;
  }
};

TEST_F(Gemma3Real, LoadsWithItsShape) {
  ASSERT_NE(model(), nullptr) << fetched_model_missing(kGemma);
  const ModelConfig& c = model()->config();
  EXPECT_EQ(c.arch_name, "gemma3");
  EXPECT_EQ(c.n_layer, 18u);
  EXPECT_EQ(c.n_head_kv, 1u);
  EXPECT_EQ(c.head_dim, 256u);
  EXPECT_EQ(c.n_vocab, 262144u);
}

TEST_F(Gemma3Real, PlainQuestionsGetSensibleGreedyAnswers) {
  ASSERT_NE(model(), nullptr) << fetched_model_missing(kGemma);
  const std::string paris = complete("Question: What is the capital of France?\nAnswer:", 4);
  EXPECT_NE(paris.find("Paris"), std::string::npos) << paris;
  const std::string water = complete("Water boils at a temperature of", 6);
  EXPECT_NE(water.find("100"), std::string::npos) << water;
  const std::string count = complete("1, 2, 3, 4, 5,", 8);
  EXPECT_EQ(count.rfind(" 6, 7", 0), 0u) << "[" << count << "]";  // 8 tokens: " 6, 7, 8"
}

TEST_F(Gemma3Real, LongPromptBeyondTheSlidingWindowWithFullAndSnapkvCaches) {
  ASSERT_NE(model(), nullptr) << fetched_model_missing(kGemma);
  std::string prompt;
  for (int i = 1; i <= 150; ++i) prompt += std::to_string(i) + ", ";  // 642 tokens: past the 512-token window
  prompt.pop_back();
  KvStats full_stats, snap_stats;
  const std::string full = complete(prompt, 4, {}, &full_stats);
  KvPolicyOptions snap;
  snap.policy = KvPolicy::SnapKV;
  snap.budget = 128;
  const std::string compressed = complete(prompt, 4, snap, &snap_stats);
  EXPECT_EQ(full.rfind(" 151", 0), 0u) << "[" << full << "]";
  EXPECT_EQ(compressed.rfind(" 151", 0), 0u) << compressed;
  // Gemma 3 digits are single tokens, so the prompt is 642 tokens. Its 15 sliding-window layers
  // hold their 512-position window with either cache; only the 3 global layers compact (642 ->
  // ~128 rows): (15 * 512 + 3 * 642) / (15 * 512 + 3 * 128) = 1.19.
  EXPECT_GT(snap_stats.ratio(), 1.15) << "the global layers are compacted";
  EXPECT_LT(snap_stats.retained_bytes, full_stats.retained_bytes);
  std::printf("  full: '%s'; snapkv@128: '%s', KV %.2fx smaller\n", full.c_str(), compressed.c_str(),
              snap_stats.ratio());
}

// Scoring every row (perplexity) runs the LM head as a matrix product over the batch: 262144
// columns, a 178 MB head and 256 MiB of logits for 256 rows, which lavapipe binds in slices
// (maxStorageBufferRange 128 MiB). Each row must equal what batches of 64 give (64 MiB of
// logits: no slicing of them), and the first rows what one token at a time gives (the matvec
// kernel: no matrix product at all). One token at a time for all 200 rows would take a minute
// of single Gemma steps to say nothing more.
TEST_F(Gemma3Real, EveryRowsLogitsOfASlicedBatchEqualThoseOfUnslicedBatches) {
  ASSERT_NE(model(), nullptr) << fetched_model_missing(kGemma);
  std::string text;
  for (int i = 0; i < 3; ++i)  // 200 rows: their logits (200 MiB) are split too on lavapipe
    text +=
        "The GNU General Public License is a free, copyleft license for software and other kinds of works. "
        "The licenses for most software and other practical works are designed to take away your freedom "
        "to share and change the works. By contrast, the GNU General Public License is intended to "
        "guarantee your freedom to share and change all versions of a program. ";
  const std::vector<int32_t> tokens = model()->tokenizer().encode(text, true);
  ASSERT_GT(tokens.size() * model()->config().n_vocab * 4, 128ull << 20);
  // Per row: the argmax and the logits of a spread of token ids (a whole row is 1 MiB).
  struct Row {
    int32_t top;
    std::vector<float> picks;
  };
  auto rows_of = [&](uint32_t n_batch, size_t n_tokens) {
    SessionOptions o;
    o.n_ctx = 512;
    o.n_batch = n_batch;
    o.row_logits = true;
    Session s(*model(), o);
    std::vector<Row> rows;
    s.prefill_rows(std::span(tokens).first(n_tokens), [&](uint32_t, std::span<const float> lg) {
      Row r{argmax(lg), {}};
      for (size_t id = 7; id < lg.size(); id += 4099) r.picks.push_back(lg[id]);
      rows.push_back(std::move(r));
    });
    return rows;
  };
  const std::vector<Row> batch = rows_of(256, tokens.size()), unsliced = rows_of(64, tokens.size()),
                         single = rows_of(1, 12);
  ASSERT_EQ(batch.size(), tokens.size());
  ASSERT_EQ(unsliced.size(), tokens.size());
  float worst = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const Row& ref = i < single.size() ? single[i] : unsliced[i];
    EXPECT_EQ(batch[i].top, ref.top) << "row " << i;
    EXPECT_EQ(batch[i].top, unsliced[i].top) << "row " << i;
    worst = std::max({worst, max_abs_diff(batch[i].picks, ref.picks), max_abs_diff(batch[i].picks, unsliced[i].picks)});
  }
  EXPECT_LT(worst, 0.05f) << "largest logit difference between a sliced batch and unsliced or single rows";
  std::printf("  %zu rows, largest logit difference %.5f\n", tokens.size(), worst);
}

}  // namespace
}  // namespace snapvk::test
