// The fidelity suite (issue 13): the retrieval tasks' prompts (host/report/eval_tasks.h),
// perplexity against the CPU reference model (host/report/perplexity.h), the suite's summary
// (host/report/suite.h) and the CLI's eval/perplexity commands, on stories260K and on
// SmolLM2's byte-level BPE tokenizer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "host/gguf/gguf.h"
#include "host/model/model.h"
#include "host/ref/ref_model.h"
#include "host/report/eval_tasks.h"
#include "host/report/perplexity.h"
#include "host/report/suite.h"
#include "host/report/texts.h"
#include "tests/cli_runner.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

namespace fs = std::filesystem;

ProfileSpec spec(KvPolicy p, uint32_t budget, uint32_t window, uint32_t ahead = 0) {
  ProfileSpec s;
  s.label = kv_policy_name(p);
  s.kv.policy = p, s.kv.budget = budget, s.kv.window = window, s.kv.pool_ahead = ahead;
  return s;
}

// Every task, on a SentencePiece and a byte-level BPE tokenizer: exactly the context length,
// the answer written in the prompt where needle_pos says, the question last, the depth honoured.
void check_task_prompts(const Tokenizer& tok, uint32_t n_vocab) {
  for (EvalTask t : all_eval_tasks()) {
    SCOPED_TRACE(eval_task_name(t));
    for (uint32_t L : {700u, 1031u}) {
      uint32_t last_pos = 0;
      for (uint32_t d : {0u, 50u, 100u}) {
        const TaskPrompt p = task_prompt(t, tok, n_vocab, L, d, 3);
        ASSERT_EQ(p.tokens.size(), L);
        EXPECT_FALSE(p.value.empty());
        EXPECT_GT(p.value_tokens, 0u);
        const std::string after = tok.decode(std::vector<int32_t>(p.tokens.begin() + p.needle_pos, p.tokens.end()));
        const std::string all = tok.decode(p.tokens);
        // the asked-for sentence starts at needle_pos and holds the answer
        const size_t at = after.find(p.value);
        ASSERT_NE(at, std::string::npos) << after.substr(0, 200);
        EXPECT_LT(at, 80u) << after.substr(0, 200);
        EXPECT_EQ(all.rfind('?'), all.find('?', all.size() - 200)) << "the question is at the end";
        EXPECT_TRUE(task_answered(p, " " + p.value + ". And"));
        EXPECT_FALSE(task_answered(p, " nothing of it"));
        if (d == 0) {
          EXPECT_LT(p.needle_pos, L / 10 + 40);
        }
        if (d == 50) {
          EXPECT_NEAR(double(p.needle_pos), L / 2.0, L / 8.0);
        }
        if (d > 0) {
          EXPECT_GT(p.needle_pos, last_pos);
        }
        last_pos = p.needle_pos;
      }
    }
    EXPECT_THROW(task_prompt(t, tok, n_vocab, 10, 50, 1), Error);
    // the same cell is the same prompt; another seed hides another value
    EXPECT_EQ(task_prompt(t, tok, n_vocab, 700, 50, 3).tokens, task_prompt(t, tok, n_vocab, 700, 50, 3).tokens);
  }
}

class Fidelity : public VkTest {};

TEST_F(Fidelity, TaskPromptsOnSentencePiece) {
  check_task_prompts(stories_model().tokenizer(), stories_model().config().n_vocab);
}

TEST(FidelityNoGpu, TaskPromptsOnByteLevelBpe) {
  const GgufFile f = GgufFile::open(model_path("SmolLM2-135M-Instruct.Q4_1.gguf"));
  Tokenizer tok(vocab_from_gguf(f));
  check_task_prompts(tok, uint32_t(tok.n_vocab()));
  // sentences are joined by spaces, as written text is
  const TaskPrompt p = task_prompt(EvalTask::Needle, tok, uint32_t(tok.n_vocab()), 300, 50, 1);
  const std::string text = tok.decode(p.tokens);
  EXPECT_EQ(text.find(".The"), std::string::npos) << text.substr(0, 300);
  EXPECT_NE(text.find(". The secret number is " + p.value + "."), std::string::npos);
}

TEST(FidelityNoGpu, MultiNeedleHidesFourDistinctNumbersAndAsksForOne) {
  const GgufFile f = GgufFile::open(model_path("SmolLM2-135M-Instruct.Q4_1.gguf"));
  Tokenizer tok(vocab_from_gguf(f));
  for (uint64_t seed = 1; seed < 6; ++seed) {
    const TaskPrompt p = task_prompt(EvalTask::MultiNeedle, tok, uint32_t(tok.n_vocab()), 900, 30, seed);
    const std::string text = tok.decode(p.tokens);
    size_t doors = 0;
    for (size_t at = text.find("door is "); at != std::string::npos; at = text.find("door is ", at + 1)) ++doors;
    EXPECT_EQ(doors, 4u) << "four needles (the question ends at \"door is\")";
    EXPECT_EQ(text.find(p.value), text.rfind(p.value)) << "the asked value appears once";
  }
}

TEST(FidelityNoGpu, ShippedTextIsEmbedded) {
  ASSERT_FALSE(shipped_texts().empty());
  const auto& t = shipped_texts().front();
  EXPECT_EQ(t.name, "gpl-3.0");
  std::ifstream in(std::string(SNAPVK_SOURCE_DIR) + "/data/texts/gpl-3.0.txt", std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(t.text, ss.str()) << "the embedded bytes are the file's";
}

// The full cache's perplexity equals the CPU reference model's, token by token: chunk c's
// first half is context, the rest is scored, BOS replaces each chunk's first token.
TEST_F(Fidelity, PerplexityMatchesTheReferenceModel) {
  const Model& m = stories_model();
  const std::string text(shipped_texts().front().text.substr(0, 4000));
  const auto tokens = perplexity_tokens(m, text);
  PerplexityOptions o;
  o.n_ctx = 96;
  o.max_chunks = 2;
  o.specs = {{"full:f32", {}, {KvType::F32, KvType::F32}}};  // after the full f16 reference
  o.n_batch = 20;  // several batches per half
  const PerplexityReport r = run_perplexity(m, tokens, "gpl", o);
  ASSERT_EQ(r.rows.size(), 2u);
  EXPECT_EQ(r.chunks, 2u);
  EXPECT_EQ(r.rows[1].scored, 2u * (96 / 2 - 1));
  double nll = 0;
  uint64_t n = 0;
  for (uint32_t c = 0; c < 2; ++c) {
    RefModel ref(m.gguf(), m.config(), 96);
    for (uint32_t i = 0; i + 1 < 96; ++i) {
      const int32_t tok = i == 0 ? m.tokenizer().bos() : tokens[c * 96 + i];
      const auto logits = ref.forward(tok);
      if (i < 48) continue;
      double mx = -INFINITY, sum = 0;
      for (float v : logits) mx = std::max(mx, double(v));
      for (float v : logits) sum += std::exp(double(v) - mx);
      nll += mx + std::log(sum) - logits[size_t(tokens[c * 96 + i + 1])];
      n += 1;
    }
  }
  ASSERT_EQ(n, r.rows[1].scored);
  EXPECT_NEAR(r.rows[1].nll, nll / double(n), 1e-4);
  EXPECT_NEAR(r.rows[1].ppl, std::exp(nll / double(n)), 1e-3 * r.rows[1].ppl);
  EXPECT_DOUBLE_EQ(r.rows[1].top1, 1.0);
  EXPECT_LT(r.rows[1].kl, 1e-4);  // against the f16 cache's
  EXPECT_EQ(r.rows[0].kl, 0.0);
}

TEST_F(Fidelity, PerplexityOfACompressedFirstHalf) {
  const Model& m = stories_model();
  const auto tokens = perplexity_tokens(m, std::string(shipped_texts().front().text.substr(0, 6000)));
  PerplexityOptions o;
  o.n_ctx = 256;
  o.max_chunks = 2;
  o.specs = {spec(KvPolicy::SnapKV, 40, 8), spec(KvPolicy::StreamingLLM, 200, 8)};
  o.specs[1].label = "streamingllm@200";
  const PerplexityReport r = run_perplexity(m, tokens, "gpl", o);
  ASSERT_EQ(r.rows.size(), 3u);
  EXPECT_EQ(r.rows[0].policy, "full");
  EXPECT_EQ(r.rows[1].policy, "snapkv");
  // a budget of 40 of 128 prompt entries changes the predictions; one above the prompt does not
  EXPECT_GT(r.rows[1].kl, 1e-4);
  EXPECT_LT(r.rows[1].top1, 1.0);
  EXPECT_LT(r.rows[1].kv_bytes, r.rows[1].full_bytes);
  EXPECT_EQ(r.rows[2].kl, 0.0);
  EXPECT_EQ(r.rows[2].ppl, r.rows[0].ppl);
  EXPECT_EQ(r.rows[2].kv_bytes, r.rows[2].full_bytes);
  for (const auto& row : r.rows) {
    EXPECT_EQ(row.chunk_ppl.size(), 2u);
    EXPECT_GT(row.ppl, 1.0);
    EXPECT_GT(row.ppl_stderr, 0.0);
  }
  const std::string table = perplexity_table(r);
  EXPECT_NE(table.find("snapkv"), std::string::npos) << table;
  const auto j = nlohmann::json::parse(perplexity_json(r));
  EXPECT_EQ(j["rows"].size(), 3u);
  EXPECT_DOUBLE_EQ(j["rows"][1]["kl"].get<double>(), r.rows[1].kl);
}

TEST_F(Fidelity, PerplexityRefusesBadInput) {
  const Model& m = stories_model();
  const auto tokens = perplexity_tokens(m, "A short text.");
  PerplexityOptions o;
  o.n_ctx = 64;
  EXPECT_THROW(run_perplexity(m, tokens, "short", o), Error);  // fewer tokens than a chunk
  o.n_ctx = 5;
  EXPECT_THROW(run_perplexity(m, std::vector<int32_t>(50, 5), "odd", o), Error);
}

TEST_F(Fidelity, SuiteSumsUpEveryTaskAndPerplexity) {
  const Model& m = stories_model();
  SuiteOptions o;
  o.tasks = {EvalTask::Needle, EvalTask::DocQa};
  o.contexts = {160, 200};
  o.depths = {20, 80};
  o.specs = {ProfileSpec{"full", KvPolicyOptions{}}, spec(KvPolicy::SnapKV, 64, 8, 4)};
  o.text_name = "gpl";
  o.text_tokens = perplexity_tokens(m, std::string(shipped_texts().front().text.substr(0, 3000)));
  o.ppl_ctx = 160, o.ppl_chunks = 1;
  const SuiteReport r = run_suite(m, o);
  ASSERT_EQ(r.tasks.size(), 2u);
  ASSERT_TRUE(r.ppl.has_value());
  for (const auto& t : r.tasks) EXPECT_EQ(t.cells.size(), 2u * 2u * 2u);
  uint32_t found = 0;
  for (const auto& t : r.tasks)
    for (const auto& c : t.cells)
      if (c.policy == "snapkv" && c.context == 200) found += c.found;
  EXPECT_EQ(r.score("snapkv", 200), std::make_pair(found, 4u));
  EXPECT_EQ(r.score("full"), std::make_pair(r.score("full", 160).first + r.score("full", 200).first, 8u));
  const std::string table = suite_table(r);
  EXPECT_NE(table.find("docqa"), std::string::npos) << table;
  EXPECT_NE(table.find("perplexity"), std::string::npos) << table;
  const fs::path dir = fs::temp_directory_path() / ("snapvk-suite-" + std::to_string(getpid()));
  fs::remove_all(dir);
  const auto paths = write_suite_files(r, dir.string());
  EXPECT_EQ(paths.size(), 3u + 2u * 3u + 2u);
  for (const auto& p : paths) EXPECT_TRUE(fs::exists(p)) << p;
  const auto j = nlohmann::json::parse(slurp(dir / "suite.json"));
  EXPECT_EQ(j["scores"].size(), 2u * 2u * 2u);  // policy x task x context
  EXPECT_EQ(j["perplexity"]["rows"].size(), 2u);
  EXPECT_EQ(slurp(dir / "suite.svg").rfind("<svg", 0), 0u);
  fs::remove_all(dir);
}

TEST_F(Fidelity, SuiteHandsOverEachTaskBeforeALaterPartFails) {
  const Model& m = stories_model();
  SuiteOptions o;
  o.tasks = {EvalTask::Needle, EvalTask::Passkey};
  o.contexts = {160};
  o.depths = {50};
  o.specs = {ProfileSpec{"full", KvPolicyOptions{}}};
  o.text_name = "short";
  o.text_tokens = perplexity_tokens(m, "A text shorter than one chunk.");  // perplexity throws, after the tasks
  o.ppl_ctx = 160;
  std::vector<EvalTask> done;
  o.on_task = [&](const NeedleReport& t) {
    EXPECT_EQ(t.cells.size(), 1u);
    done.push_back(t.task);
  };
  EXPECT_THROW(run_suite(m, o), Error);
  EXPECT_EQ(done, o.tasks);
}

TEST(FidelityCli, EvalTasksAndPerplexityRun) {
  const std::string model = model_path("stories260K.gguf");
  const fs::path dir = fs::temp_directory_path() / ("snapvk-evalcli-" + std::to_string(getpid()));
  auto r = run_cli({"eval", "passkey", "-m", model, "--contexts", "200", "--depths", "50", "--kv-policy", "full,snapkv",
                    "--kv-budget", "64", "--kv-window", "8", "--kv-pool-ahead", "5", "--out", dir.string()});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("passkey:"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(dir / "passkey.csv"));
  r = run_cli({"perplexity", "-m", model, "-f", "gpl-3.0", "-c", "128", "--chunks", "1", "--kv-policy", "snapkv",
               "--kv-budget", "32", "--kv-window", "8", "--out", dir.string()});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("full"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("snapkv"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(dir / "perplexity.json"));
  // bad input: one line, non-zero exit
  r = run_cli({"perplexity", "-m", model, "-f", "/nonexistent/text.txt"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("cannot read the text"), std::string::npos) << r.err;
  r = run_cli({"eval", "suite", "-m", model, "--tasks", "needle", "--contexts", "160", "--ppl-ctx", "100000", "--out",
               dir.string() + "-long"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("--ppl-ctx 100000"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir.string() + "-long")) << "refused before any task ran";
  r = run_cli({"eval", "suite", "-m", model, "--tasks", "needle,bogus"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("unknown task 'bogus'"), std::string::npos) << r.err;
  r = run_cli({"eval", "needle", "-m", model, "--kv-policy", "snapkv", "--kv-pool-ahead", "99999999"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("--kv-pool-ahead"), std::string::npos) << r.err;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace snapvk::test
