// The acceptance check: `snapvk run ... --kv-policy snapkv --kv-budget 64 --kv-window 8
// --dump-kv-selection sel.json` on stories260K writes the selection the CPU reference makes.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "host/model/model.h"
#include "host/ref/ref_model.h"
#include "host/ref/snapkv_ref.h"
#include "tests/cli_runner.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

namespace fs = std::filesystem;

// What --dump-kv-selection wrote: the prompt's length and, per layer and head, the positions kept.
struct DumpedSelection {
  uint32_t prompt_len = 0;
  std::vector<std::vector<std::vector<uint32_t>>> layers;
};
DumpedSelection read_selection(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json sel = nlohmann::json::parse(ss.str());
  return {sel.at("prompt_len").get<uint32_t>(),
          sel.at("layers").get<std::vector<std::vector<std::vector<uint32_t>>>>()};
}

// --kv-sinks: StreamingLLM keeps that many first tokens and the most recent rest of the budget,
// in every head of every layer (0: a plain sliding window).
TEST(SnapkvCli, SinksKeepTheFirstTokensOfEveryHead) {
  const fs::path dir = fs::temp_directory_path() / ("snapvk-sinks-" + std::to_string(getpid()));
  fs::create_directories(dir);
  for (const uint32_t sinks : {0u, 2u, 9u}) {
    const CliResult r =
        run_cli({"run", "-m", model_path("stories260K.gguf"), "-p",
                 "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.", "-n",
                 "1", "--temp", "0", "--kv-policy", "streamingllm", "--kv-budget", "16", "--kv-window", "4",
                 "--kv-sinks", std::to_string(sinks), "--dump-kv-selection", (dir / "sel.json").string()});
    ASSERT_EQ(r.code, 0) << r.err;
    const DumpedSelection sel = read_selection(dir / "sel.json");
    const uint32_t L = sel.prompt_len;
    ASSERT_GT(L, 16u);
    std::vector<uint32_t> want;
    for (uint32_t i = 0; i < sinks; ++i) want.push_back(i);
    for (uint32_t p = L - (16 - sinks); p < L; ++p) want.push_back(p);
    for (const auto& layer : sel.layers)
      for (const auto& head : layer) EXPECT_EQ(head, want) << "sinks " << sinks;
  }
  // more sinks than the budget leaves beside the window is refused, naming the flag
  const CliResult bad = run_cli({"run", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time", "-n", "1",
                                 "--kv-policy", "streamingllm", "--kv-budget", "16", "--kv-window", "4", "--kv-sinks",
                                 "13"});
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("(option --kv-budget)"), std::string::npos) << bad.err;
  fs::remove_all(dir);
}

TEST(SnapkvCli, DumpedSelectionMatchesCpuReference) {
  const fs::path dir = fs::temp_directory_path() / ("snapvk-sel-" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::string text;
  for (int i = 0; i < 3; ++i)
    text +=
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
        "One day, she saw a big red ball and a small cat. ";
  std::ofstream(dir / "prompt.txt") << text;
  const CliResult r = run_cli({"run", "-m", model_path("stories260K.gguf"), "-f", (dir / "prompt.txt").string(),
                               "--kv-policy", "snapkv", "--kv-budget", "64", "--kv-window", "8", "-n", "4", "--temp",
                               "0", "--dump-kv-selection", (dir / "sel.json").string()});
  ASSERT_EQ(r.code, 0) << r.err;
  const DumpedSelection sel = read_selection(dir / "sel.json");
  const uint32_t L = sel.prompt_len;
  const auto& got = sel.layers;  // [layer][head] -> positions
  fs::remove_all(dir);

  // The reference: a CPU forward pass that stores K/V in f16 as the default cache does.
  Context ctx;
  Kernels k(ctx);
  Model m(k, model_path("stories260K.gguf"));
  const auto& c = m.config();
  const auto tokens = m.tokenizer().encode(text, true);
  ASSERT_EQ(tokens.size(), L);
  RefModel ref(m.gguf(), c, 512, /*kv_f16=*/true);
  for (int32_t t : tokens) ref.forward(t);
  KvPolicyOptions pol;  // the CLI's defaults, word completion included
  pol.policy = KvPolicy::SnapKV;
  pol.budget = 64;
  pol.window = 8;
  const std::vector<uint32_t> words = m.tokenizer().word_continuations(tokens);
  ASSERT_EQ(got.size(), c.n_layer);
  const uint32_t P = L - 8, count = 64 - 8;
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    std::vector<float> keys(size_t(c.n_head_kv) * L * c.head_dim);
    const auto& kc = ref.k_cache(l);
    for (uint32_t p = 0; p < L; ++p)
      for (uint32_t h = 0; h < c.n_head_kv; ++h)
        for (uint32_t d = 0; d < c.head_dim; ++d)
          keys[(size_t(h) * L + p) * c.head_dim + d] = kc[(size_t(p) * c.n_head_kv + h) * c.head_dim + d];
    std::vector<double> scores;
    const auto want =
        ref::select_layer(pol, l, c.n_layer, ref.q_history(l), keys, L, c.n_head, c.n_head_kv, c.head_dim, &scores,
                          &words);
    ASSERT_EQ(got[l].size(), c.n_head_kv);
    for (uint32_t h = 0; h < c.n_head_kv; ++h) {
      ASSERT_EQ(got[l][h].size(), 64u);
      if (got[l][h] == want[h]) continue;
      // only near-ties at the selection boundary may differ: fp32 sums in another order, and hidden
      // states that went through l layers of the GPU's forward pass rather than the CPU's
      std::vector<double> sorted(scores.begin() + size_t(h) * P, scores.begin() + size_t(h + 1) * P);
      std::sort(sorted.begin(), sorted.end(), std::greater<>());
      const double boundary = sorted[count - 1];
      std::vector<uint32_t> diff;
      std::set_symmetric_difference(got[l][h].begin(), got[l][h].end(), want[h].begin(), want[h].end(),
                                    std::back_inserter(diff));
      for (uint32_t p : diff)
        EXPECT_NEAR(scores[size_t(h) * P + p], boundary, 3e-4 * boundary)
            << "layer " << l << " head " << h << " position " << p;
    }
  }
}

}  // namespace
}  // namespace snapvk::test
