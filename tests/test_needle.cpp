// snapvk eval needle (host/report/needle.h) on stories260K: the prompt hides the needle at each
// depth, the grid's report files, and the lengths bounded before any prompt is built (issue 7).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/report/needle.h"
#include "host/report/profile.h"
#include "tests/expect_error.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class NeedleTest : public VkTest {};

TEST_F(NeedleTest, PromptPutsTheNeedleAtEachDepth) {
  const Model& m = stories_model();
  const Tokenizer& tok = m.tokenizer();
  const uint32_t n_vocab = m.config().n_vocab;
  const NeedlePrompt p0 = needle_prompt(tok, n_vocab, 256, 0, 1);
  const NeedlePrompt p50 = needle_prompt(tok, n_vocab, 256, 50, 1);
  const NeedlePrompt p100 = needle_prompt(tok, n_vocab, 256, 100, 1);
  for (const NeedlePrompt* p : {&p0, &p50, &p100}) {
    EXPECT_EQ(p->tokens.size(), 256u);
    EXPECT_EQ(p->value.size(), 5u);
    const std::string text = tok.decode(p->tokens);
    EXPECT_NE(text.find("The secret number is " + p->value + "."), std::string::npos) << text;
    EXPECT_NE(text.find("What is the secret number?"), std::string::npos);
    EXPECT_EQ(
        tok.decode(std::vector<int32_t>(p->tokens.begin() + p->needle_pos, p->tokens.end())).rfind(" The secret", 0),
        0u);
  }
  EXPECT_EQ(p0.needle_pos, 1u);  // right after BOS
  EXPECT_GT(p50.needle_pos, 256u / 2 - 40);
  EXPECT_LT(p50.needle_pos, 256u / 2 + 20);
  EXPECT_GT(p100.needle_pos, p50.needle_pos);
  const std::string tail = tok.decode(std::vector<int32_t>(p100.tokens.begin() + p100.needle_pos, p100.tokens.end()));
  EXPECT_EQ(tail.find("What is"), tail.find('.') + 2) << "at 100% the question follows the needle: " << tail;
  EXPECT_NE(p0.value, needle_prompt(tok, n_vocab, 512, 0, 1).value) << "each cell hides its own number";
  EXPECT_THROW(needle_prompt(tok, n_vocab, 12, 50, 1), Error);
}

TEST_F(NeedleTest, GridOnStoriesWritesCsvAndSvg) {
  NeedleOptions o;
  o.contexts = {256, 128};
  o.depths = {0, 50, 100};
  ProfileSpec snapkv;
  snapkv.label = "snapkv", snapkv.kv.policy = KvPolicy::SnapKV, snapkv.kv.budget = 64, snapkv.kv.window = 8;
  o.specs = {ProfileSpec{"full", KvPolicyOptions{}}, snapkv};
  const NeedleReport r = run_needle(stories_model(), o);
  EXPECT_EQ(r.contexts, (std::vector<uint32_t>{128, 256}));
  ASSERT_EQ(r.cells.size(), 2u * 2u * 3u);
  for (const auto& c : r.cells) {
    SCOPED_TRACE(c.policy + " " + std::to_string(c.context) + " " + std::to_string(c.depth));
    EXPECT_TRUE(c.error.empty()) << c.error;
    EXPECT_EQ(c.value.size(), 5u);
    EXPECT_FALSE(c.generated.empty());
    EXPECT_EQ(c.found, c.generated.find(c.value) != std::string::npos);
    EXPECT_NE(r.cell(c.policy, c.context, c.depth), nullptr);
  }
  const std::string grid = needle_grid(r);
  EXPECT_NE(grid.find("full: found"), std::string::npos) << grid;
  EXPECT_NE(grid.find("snapkv: found"), std::string::npos) << grid;
  EXPECT_NE(grid.find("trained for retrieval"), std::string::npos) << grid;

  const fs::path dir = temp_dir("needle");
  const auto paths = write_needle_files(r, dir.string());
  for (const auto& p : paths) EXPECT_TRUE(fs::exists(p)) << p;
  const std::string csv = slurp(dir / "needle.csv");
  EXPECT_EQ(count_lines(csv), r.cells.size() + 1);
  EXPECT_EQ(csv.rfind("policy,context,depth,", 0), 0u);
  const std::string svg = slurp(dir / "needle.svg");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  expect_well_formed_xml(svg);
  EXPECT_NE(svg.find(">full ("), std::string::npos);
  EXPECT_NE(svg.find(">snapkv ("), std::string::npos);
  const json j = json::parse(slurp(dir / "needle.json"));
  EXPECT_EQ(j.at("cells").size(), r.cells.size());
  fs::remove_all(dir);
}

TEST_F(NeedleTest, LengthsAreBoundedBeforeBuildingPrompts) {
  const Tokenizer& tok = stories_model().tokenizer();
  const uint32_t n_vocab = stories_model().config().n_vocab;
  // A context of 2^32 - 1 tokens would be built (16 GiB) before any session refused it.
  expect_error([&] { needle_prompt(tok, n_vocab, kU32Max, 50, 1); },
               "needle: context length 4294967295 is out of range (1..16777216)");
  NeedleOptions o;
  o.depths = {50};
  o.specs = {ProfileSpec{"full", KvPolicyOptions{}}};
  o.contexts = {kU32Max};
  expect_error([&] { run_needle(stories_model(), o); }, "needle: context length 4294967295 is out of range");
  // context + generated tokens was a 32-bit sum for the session's n_ctx.
  o.contexts = {64};
  o.extra_tokens = kU32Max - 3;
  expect_error([&] { run_needle(stories_model(), o); },
               "needle: extra tokens 4294967292 is out of range (0..16777216)");
  o.contexts = {64};
  o.extra_tokens = kMaxContext;
  expect_error([&] { run_needle(stories_model(), o); }, "needle: context plus generated tokens");
}

}  // namespace
}  // namespace snapvk::test
