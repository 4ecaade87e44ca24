// Endless chat (host/session/endless.h): at a turn's end a cache over its budget is compacted
// again, in place, with the last W tokens voting; it stays within the budget plus one turn for
// any number of turns, with the device memory flat. On stories260K, through the CLI (EndlessCli),
// and on a real instruct model, whose next-token predictions are measured against a full-cache
// conversation of the same turns (EndlessSmolLM2).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <regex>
#include <span>
#include <tuple>

#include "host/pack/pack.h"
#include "host/session/endless.h"
#include "host/session/session.h"
#include "tests/cli_runner.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

struct EndlessTest : VkTest {
  static Model& stories() { return stories_model(); }
  static SessionOptions options(uint32_t n_ctx) {
    SessionOptions o;
    o.n_ctx = n_ctx;
    o.n_batch = 32;
    o.kv_type_k = o.kv_type_v = KvType::F16;
    o.kv.policy = KvPolicy::SnapKV;
    o.kv.budget = 48;
    o.kv.window = 8;
    return o;
  }
  // Most rows any head holds now.
  static uint32_t rows(const Session& s) { return s.cache().max_len(s.n_past() - s.cache().compacted_len()); }
};

// Compacting again at a turn's end is the compressing prefill of the same tokens: the same cache,
// byte for byte. Re-compaction ranks cache entries, not the prompt's words, so the prefill it is
// compared with does not complete words either (docs/packs.md).
TEST_F(EndlessTest, RecompressionEqualsACompressingPrefill) {
  std::string text;
  for (int i = 0; i < 6; ++i) text += "Once upon a time, there was a little girl named Lily. She loved to play. ";
  const std::vector<int32_t> all = stories().tokenizer().encode(text, true);
  ASSERT_GT(all.size(), 90u);
  const std::vector<int32_t> first(all.begin(), all.begin() + 40), rest(all.begin() + 40, all.begin() + 90);
  SessionOptions o = options(128);
  o.kv.complete_words = 0;
  EndlessChat chat(stories(), o);
  Session& endless = chat.session();
  endless.prefill(first);  // within the budget: kept whole
  EXPECT_FALSE(chat.end_turn());
  endless.prefill(rest);
  EXPECT_EQ(rows(endless), 90u);
  EXPECT_TRUE(chat.end_turn());
  EXPECT_EQ(rows(endless), 48u);

  Session once(stories(), o);
  once.prefill(std::span<const int32_t>(all.data(), 90));
  const KvImage a = endless.save_state(), b = once.save_state();
  ASSERT_EQ(a.layers.size(), b.layers.size());
  EXPECT_EQ(a.compacted_len, b.compacted_len);
  for (size_t l = 0; l < a.layers.size(); ++l) {
    EXPECT_EQ(a.layers[l].base, b.layers[l].base);
    EXPECT_TRUE(a.layers[l].k == b.layers[l].k) << "layer " << l;
    EXPECT_TRUE(a.layers[l].v == b.layers[l].v) << "layer " << l;
  }
  // and both go on alike
  const int32_t t = 300;
  auto la = endless.decode(t);
  const std::vector<float> la_copy(la.begin(), la.end());
  auto lb = once.decode(t);
  EXPECT_EQ(la_copy, std::vector<float>(lb.begin(), lb.end()));
}

// 100 turns: the cache never holds more than the budget plus the turn, its positions run past
// n_ctx, and the device memory is the same after every turn.
TEST_F(EndlessTest, HundredTurnsStayWithinTheBudgetWithFlatMemory) {
  const uint32_t n_ctx = 96;
  EndlessChat chat(stories(), options(n_ctx));
  Session& s = chat.session();
  const Tokenizer& tok = stories().tokenizer();
  uint64_t memory = 0, allocated = 0;
  uint32_t compactions = 0;
  for (int turn = 0; turn < 100; ++turn) {
    const std::string line = " Lily said hello to friend " + std::to_string(turn) + ".";
    auto logits = s.prefill(tok.encode(line, turn == 0));
    for (int i = 0; i < 8; ++i) {
      const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      logits = s.decode(next);
    }
    EXPECT_LE(rows(s), s.options().kv.budget + 8 + tok.encode(line, turn == 0).size()) << "turn " << turn;
    compactions += chat.end_turn();
    ASSERT_LE(rows(s), s.options().kv.budget) << "turn " << turn;
    if (turn == 0) {
      memory = ctx().memory().current();
      allocated = s.cache().allocated_bytes();
    }
    ASSERT_EQ(ctx().memory().current(), memory) << "turn " << turn;
    ASSERT_EQ(s.cache().allocated_bytes(), allocated) << "turn " << turn;
  }
  EXPECT_GT(s.n_past(), 10 * n_ctx);  // positions went on
  EXPECT_GT(compactions, 50u);
}

// A pack holds no queries: the first compaction after loading one votes with the few tokens
// since (fewer than W), and the cache comes out within the budget with finite logits after it.
TEST_F(EndlessTest, FirstCompactionAfterAPackVotesWithTheQueriesItHas) {
  std::string text;
  for (int i = 0; i < 3; ++i) text += "Once upon a time, there was a little girl named Lily. She loved to play. ";
  const std::vector<int32_t> doc = stories().tokenizer().encode(text, true);
  ASSERT_GT(doc.size(), 48u);
  SessionOptions full = options(128);
  full.kv.policy = KvPolicy::Full, full.kv.budget = 0;
  Session a(stories(), full);
  a.prefill(doc);
  const Pack p = read_pack(write_pack(pack_of(a, doc)), "doc");
  EndlessChat chat(stories(), options(128));
  Session& s = chat.session();
  load_pack(s, p, "doc");
  const std::vector<int32_t> turn = stories().tokenizer().encode(" She", false);
  ASSERT_LT(turn.size(), s.options().kv.window);
  s.prefill(turn);
  EXPECT_TRUE(chat.end_turn());
  EXPECT_LE(rows(s), 48u);
  const auto logits = s.decode(300);
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
}

TEST_F(EndlessTest, RefusesWhatItCannotKeepWithinABudget) {
  SessionOptions o = options(128);
  o.kv.policy = KvPolicy::AdaKV;
  EXPECT_THROW(EndlessChat(stories(), o), Error);
  o = options(128);
  o.kv.budget = 0, o.kv.ratio = 0.5f;
  EXPECT_THROW(EndlessChat(stories(), o), Error);
  o = options(48);
  EXPECT_THROW(EndlessChat(stories(), o), Error);  // no room for a turn
}

// "[kv snapkv: X retained for N tokens (first K compressed), ...]" -> (bytes text, N, K) per turn.
std::vector<std::tuple<std::string, int, int>> kv_lines(const std::string& err) {
  std::vector<std::tuple<std::string, int, int>> out;
  const std::regex re(R"(\[kv snapkv: (.*) retained for (\d+) tokens \(first (\d+) compressed\))");
  for (auto it = std::sregex_iterator(err.begin(), err.end(), re); it != std::sregex_iterator(); ++it)
    out.emplace_back((*it)[1], std::stoi((*it)[2]), std::stoi((*it)[3]));
  return out;
}

// snapvk chat with a --kv-budget: each turn's end compacts the cache, which then holds the
// budget; the conversation goes on past n_ctx.
TEST(EndlessCli, ChatWithABudgetCompactsAtEachTurnsEnd) {
  std::string input;
  for (int i = 0; i < 12; ++i) input += "Tell me about Lily and her dog number " + std::to_string(i) + ".\n";
  const CliResult r =
      run_cli_with_input({"chat", "-m", model_path("stories260K.gguf"), "--chat-template", "chatml", "--kv-policy",
                          "snapkv", "--kv-budget", "24", "--kv-window", "4", "-c", "96", "-n", "16", "--temp", "0"},
                         input, 120);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("endless chat: the cache keeps 24 entries per head"), std::string::npos) << r.err;
  const auto turns = kv_lines(r.err);
  ASSERT_EQ(turns.size(), 12u) << r.err;
  for (const auto& [bytes, n_past, compressed] : turns) {
    EXPECT_EQ(n_past, compressed);            // compacted at the turn's end: every position is "prompt" now
    EXPECT_EQ(bytes, std::get<0>(turns[0]));  // the same budget's bytes each turn
  }
  EXPECT_GT(std::get<1>(turns.back()), 96);  // past -c
  EXPECT_EQ(r.err.find("context is full"), std::string::npos) << r.err;
  // past -c positions every turn still gets an answer: what fills up is the cache's rows
  const std::regex answer(R"(answer (\d+) tokens)");
  int answers = 0;
  for (auto it = std::sregex_iterator(r.err.begin(), r.err.end(), answer); it != std::sregex_iterator();
       ++it, ++answers)
    EXPECT_GT(std::stoi((*it)[1]), 0) << "turn " << answers << "\n" << r.err;
  EXPECT_EQ(answers, 12);
}

// snapvk chat --pack: the conversation follows the pack's document, which is not prefilled.
TEST(EndlessCli, ChatAfterAPack) {
  const std::string m = model_path("stories260K.gguf");
  const std::string pack =
      (std::filesystem::temp_directory_path() / ("snapvk_chat_" + std::to_string(::getpid()) + ".svkv")).string();
  const CliResult made = run_cli({"pack", "-m", m, "-p", "Lily had a red ball and a small dog named Max.", "-o", pack,
                                  "--kv-policy", "snapkv", "--kv-budget", "8", "--kv-window", "4"});
  ASSERT_EQ(made.code, 0) << made.err;
  const CliResult r =
      run_cli_with_input({"chat", "-m", m, "--chat-template", "chatml", "--pack", pack, "-n", "8", "--temp", "0"},
                         "What did Lily have?\n/reset\nAnd the dog?\n");
  std::filesystem::remove(pack);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("tokens of document loaded"), std::string::npos) << r.err;
  const auto turns = kv_lines(r.err);
  ASSERT_EQ(turns.size(), 2u) << r.err;
  const int doc = std::get<2>(turns[0]);  // the pack's compressed document, before the turns
  EXPECT_GT(doc, 8);
  EXPECT_EQ(std::get<2>(turns[1]), doc);  // /reset starts again from the pack
}

// ---- a real instruct model: SmolLM2-135M-Instruct Q4_1 (docs/fidelity.md, "Endless chat") ----

struct EndlessSmolLM2 : VkTest {
  static Model& model() { return smollm2_model(); }
  static std::vector<int32_t> chatml(const std::string& text) { return model().tokenizer().encode(text, false, true); }
  static std::vector<float> copy(std::span<const float> s) { return std::vector<float>(s.begin(), s.end()); }
};

// KL(p || q) of two softmaxes over logits.
double kl(const std::vector<float>& p_logits, const std::vector<float>& q_logits) {
  auto log_softmax = [](const std::vector<float>& x) {
    const double m = *std::max_element(x.begin(), x.end());
    double sum = 0;
    for (float v : x) sum += std::exp(double(v) - m);
    std::vector<double> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = double(x[i]) - m - std::log(sum);
    return out;
  };
  const std::vector<double> lp = log_softmax(p_logits), lq = log_softmax(q_logits);
  double d = 0;
  for (size_t i = 0; i < lp.size(); ++i) d += std::exp(lp[i]) * (lp[i] - lq[i]);
  return d;
}

size_t argmax(const std::vector<float>& v) { return size_t(std::max_element(v.begin(), v.end()) - v.begin()); }

// 100 turns, each a user question and a fixed answer (teacher-forced: both conversations hold the
// same tokens). After each part, the next-token prediction of the endless sessions is compared
// with the full cache's: 200 predictions per budget.
TEST_F(EndlessSmolLM2, ChatFollowsAFullCacheConversation) {
  const char* qa[][2] = {
      {"What is the capital of France?", "The capital of France is Paris."},
      {"Name a primary colour.", "Red is a primary colour."},
      {"How many legs does a spider have?", "A spider has eight legs."},
      {"What do bees make?", "Bees make honey."},
      {"What is two plus three?", "Two plus three is five."},
      {"Which planet is called the red planet?", "Mars is called the red planet."},
      {"What is frozen water called?", "Frozen water is called ice."},
      {"What do you call a baby cat?", "A baby cat is called a kitten."},
  };
  // docs/fidelity.md also lists C = 192, measured by this test with {96, 192} (twice the time);
  // its figures are of 100 turns (SNAPVK_ENDLESS_TURNS=100). The suite runs 24: three rounds of
  // the questions, the cache compacted again at every turn's end from the second on, which is all
  // that the assertions check; more turns only cost time (the full cache grows).
  const std::vector<uint32_t> budgets = {96};
  const char* turns_env = std::getenv("SNAPVK_ENDLESS_TURNS");
  const int turns = turns_env && std::atoi(turns_env) > 2 ? std::atoi(turns_env) : 24;
  SessionOptions full_o;
  full_o.n_ctx = 4096;
  Session full(model(), full_o);
  std::vector<std::unique_ptr<EndlessChat>> endless;
  for (uint32_t C : budgets) {
    SessionOptions o;
    o.n_ctx = C + 96;  // the budget and one turn
    o.kv.policy = KvPolicy::SnapKV, o.kv.budget = C, o.kv.window = 16;
    endless.push_back(std::make_unique<EndlessChat>(model(), o));
  }
  std::vector<uint32_t> agree(budgets.size(), 0);
  std::vector<double> kl_sum(budgets.size(), 0), kl_max(budgets.size(), 0);
  std::vector<uint32_t> most_rows(budgets.size(), 0);
  uint32_t n = 0;
  uint64_t memory_turn1 = 0;
  for (int turn = 0; turn < turns; ++turn) {
    const auto& [question, reply] = qa[turn % 8];
    const std::string user = (turn == 0 ? "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" : "") +
                             std::string("<|im_start|>user\n") + question + "<|im_end|>\n<|im_start|>assistant\n";
    for (const std::string& part : {user, std::string(reply) + "<|im_end|>\n"}) {
      const std::vector<int32_t> t = chatml(part);
      const std::vector<float> ref = copy(full.prefill(t));
      for (size_t b = 0; b < budgets.size(); ++b) {
        const std::vector<float> got = copy(endless[b]->session().prefill(t));
        agree[b] += argmax(got) == argmax(ref);
        const double d = kl(ref, got);
        kl_sum[b] += d, kl_max[b] = std::max(kl_max[b], d);
      }
      ++n;
    }
    for (size_t b = 0; b < budgets.size(); ++b) {
      const Session& s = endless[b]->session();
      most_rows[b] = std::max(most_rows[b], s.cache().max_len(s.n_past() - s.cache().compacted_len()));
      endless[b]->end_turn();
      ASSERT_LE(s.cache().max_len(s.n_past() - s.cache().compacted_len()), budgets[b]) << "turn " << turn;
    }
    if (turn == 1) memory_turn1 = ctx().memory().current();
    if (turn > 1) ASSERT_EQ(ctx().memory().current(), memory_turn1) << "turn " << turn;
  }
  std::printf("endless chat, SmolLM2-135M-Instruct Q4_1, %u predictions over %d turns (%u positions), f16 cache\n", n,
              turns, full.n_past());
  std::printf("| budget C | window W | most rows held | top-1 agreement | mean KL | max KL |\n");
  for (size_t b = 0; b < budgets.size(); ++b) {
    std::printf("| %u | 16 | %u | %.3f | %.4f | %.4f |\n", budgets[b], most_rows[b], double(agree[b]) / n,
                kl_sum[b] / n, kl_max[b]);
    EXPECT_GE(double(agree[b]) / n, 0.6) << "budget " << budgets[b];
  }
}

}  // namespace
}  // namespace snapvk::test
