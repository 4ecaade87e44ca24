// snapvk profile: the engine (host/report/profile.h) on stories260K, its report files, the dry
// run against the memory model, the bounds on context lists and run lengths, and the CLI's --json.
// The needle grid (snapvk eval needle) is in test_needle.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "host/gguf/gguf.h"
#include "host/model/model.h"
#include "host/report/profile.h"
#include "host/session/memory_model.h"
#include "host/session/sampler.h"
#include "host/session/session.h"
#include "tests/cli_runner.h"
#include "tests/expect_error.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"
#include "tests/tiny_llama.h"

namespace snapvk::test {
namespace {

namespace fs = std::filesystem;

// The reports' JSON, parsed back (a parse error throws).
using nlohmann::json;
json parse_json(const std::string& s) { return json::parse(s); }

ProfileSpec spec(KvPolicy p, uint32_t budget, uint32_t window) {
  ProfileSpec s;
  s.label = kv_policy_name(p);
  s.kv.policy = p;
  s.kv.budget = budget;
  s.kv.window = window;
  return s;
}

// The stories run: --contexts 128,256,400 --kv-budget 64 --kv-window 8.
ProfileOptions stories_options() {
  ProfileOptions o;
  o.contexts = {128, 256, 400};
  o.specs = {spec(KvPolicy::SnapKV, 64, 8), spec(KvPolicy::PyramidKV, 64, 8), spec(KvPolicy::StreamingLLM, 64, 8)};
  o.gen = 16;
  return o;
}

class ProfileEngine : public VkTest {};

// The stories run, once for the tests that read it: its report and the progress it gave.
class StoriesProfile : public VkTest {
 protected:
  struct Run {
    ProfileOptions options;
    ProfileReport report;
    std::vector<double> progress;
  };
  static const Run& run() {
    static const Run* r = [] {
      auto* x = new Run{stories_options(), {}, {}};
      ProfileOptions with_progress = x->options;
      with_progress.on_progress = [x](double f, const std::string&) { x->progress.push_back(f); };
      x->report = run_profile(stories_model(), with_progress);
      return x;
    }();
    return *r;
  }
};

TEST_F(StoriesProfile, EveryRowHoldsItsBytesRatioAndFidelityRanges) {
  const Model& m = stories_model();
  const ProfileOptions& o = run().options;
  const ProfileReport& r = run().report;
  ASSERT_EQ(r.rows.size(), o.contexts.size() * (1 + o.specs.size()));
  EXPECT_EQ(r.policies, (std::vector<std::string>{"full", "snapkv", "pyramidkv", "streamingllm"}));
  EXPECT_FALSE(r.synthetic);
  const ModelConfig& c = m.config();
  size_t i = 0;
  for (uint32_t L : o.contexts) {
    for (const std::string& p : r.policies) {
      const ProfileRow& x = r.rows[i++];
      SCOPED_TRACE("L=" + std::to_string(L) + " " + p);
      EXPECT_EQ(x.context, L);
      EXPECT_EQ(x.policy, p);
      ASSERT_TRUE(x.ran) << x.error;
      EXPECT_EQ(x.full_kv_bytes, KvCache::full_bytes(c, KvTypes{}, L + o.gen));
      EXPECT_GT(x.peak_bytes, 0u);
      EXPECT_GT(x.prefill_ms, 0.0);
      EXPECT_GT(x.decode_tok_s, 0.0);
      if (p == "full") {
        EXPECT_EQ(x.kv_bytes, x.full_kv_bytes);
        EXPECT_DOUBLE_EQ(x.ratio, 1.0);
        EXPECT_EQ(x.steps, 0u);
        EXPECT_TRUE(std::isnan(x.top1));
        continue;
      }
      // Every context here is longer than the budget: compressed.
      EXPECT_EQ(x.budget, 64u);
      EXPECT_LT(x.kv_bytes, x.full_kv_bytes);
      EXPECT_GT(x.ratio, 1.0);
      EXPECT_NEAR(x.ratio, double(x.full_kv_bytes) / double(x.kv_bytes), 1e-9);
      EXPECT_EQ(x.steps, o.gen);
      // top-1 counts whole steps; the KL's max is at least its mean and at most its sum; the
      // cache dropped positions, so the distributions differ; a step that disagrees differs.
      EXPECT_GE(x.top1, 0.0);
      EXPECT_LE(x.top1, 1.0);
      EXPECT_EQ(x.top1 * x.steps, std::round(x.top1 * x.steps)) << x.top1;
      EXPECT_GT(x.kl_mean, 0.0);
      EXPECT_GE(x.kl_max, x.kl_mean);
      EXPECT_LE(x.kl_max, x.kl_mean * x.steps * (1 + 1e-9));
      if (x.top1 < 1.0) {
        EXPECT_GT(x.kl_max, 0.0);
      }
      EXPECT_GT(x.compress_ms(), 0.0) << "the compression passes ran on the GPU";
      if (p != "streamingllm") {
        EXPECT_GT(x.score_ms, 0.0) << "SnapKV scoring ran on the GPU";
      }
    }
  }
  // Longer contexts keep the same budget: the ratio grows with L.
  EXPECT_GT(r.rows[9].ratio, r.rows[1].ratio);
}

// The fidelity figures against their definition (docs/profile.md), recomputed with plain
// sessions: decode steps teacher-forced on the full run's greedy tokens; top-1 is the share of
// steps whose argmax is the full run's, KL is KL(full || policy) per step.
TEST_F(StoriesProfile, FidelityFiguresMatchTheirDefinitionRecomputed) {
  const Model& m = stories_model();
  const ProfileOptions& o = run().options;
  const ProfileReport& r = run().report;
  ASSERT_EQ(r.rows.size(), 12u);
  for (size_t k : {size_t(1), size_t(6), size_t(11)}) {  // snapkv at 128, pyramidkv at 256, streamingllm at 400
    const ProfileRow& x = r.rows[k];
    SCOPED_TRACE("recomputed: L=" + std::to_string(x.context) + " " + x.policy);
    ASSERT_EQ(x.policy, o.specs[k % 4 - 1].label);
    auto session_options = [&](const KvPolicyOptions& kv) {
      SessionOptions so;
      so.n_ctx = x.context + o.gen, so.n_batch = o.n_batch, so.kv = kv;
      return so;
    };
    std::string needle;
    const std::vector<int32_t> prompt = profile_prompt(m, x.context, &needle);
    if (x.context >= 400) {
      EXPECT_EQ(needle.size(), 5u) << "a real model's long enough profile prompt hides a number";
    }
    Session full(m, session_options(KvPolicyOptions{}));
    std::vector<int32_t> tokens{argmax(full.prefill(prompt))};
    std::vector<std::vector<float>> full_logits;
    for (uint32_t i = 0; i < o.gen; ++i) {
      const std::span<const float> l = full.decode(tokens.back());
      full_logits.emplace_back(l.begin(), l.end());
      tokens.push_back(argmax(l));
    }
    Session s(m, session_options(o.specs[k % 4 - 1].kv));
    std::vector<int32_t> own{argmax(s.prefill(prompt))};  // its argmax at each step: its greedy answer
    uint32_t agree = 0;
    double kl_sum = 0, kl_max = 0;
    for (uint32_t i = 0; i < o.gen; ++i) {
      const std::span<const float> l = s.decode(tokens[i]);
      own.push_back(argmax(l));
      agree += argmax(l) == tokens[i + 1];
      const double kl = kl_divergence(full_logits[i], l);
      kl_sum += kl, kl_max = std::max(kl_max, kl);
    }
    EXPECT_EQ(x.top1, double(agree) / o.gen);
    EXPECT_EQ(x.needle, needle.empty() ? -1 : m.tokenizer().decode(own).find(needle) != std::string::npos ? 1 : 0);
    EXPECT_NEAR(x.kl_mean, kl_sum / o.gen, 1e-6 + 1e-4 * kl_sum / o.gen);
    EXPECT_NEAR(x.kl_max, kl_max, 1e-6 + 1e-4 * kl_max);
    std::printf("  L=%u %s: top-1 %.4f (%u of %u), KL mean %.6f max %.6f\n", x.context, x.policy.c_str(), x.top1, agree,
                o.gen, x.kl_mean, x.kl_max);
  }
}

TEST_F(StoriesProfile, ProgressRisesToOne) {
  const std::vector<double>& progress = run().progress;
  ASSERT_FALSE(progress.empty());
  EXPECT_TRUE(std::is_sorted(progress.begin(), progress.end()));
  EXPECT_DOUBLE_EQ(progress.back(), 1.0);
}

TEST_F(StoriesProfile, ReportFilesAndTableHoldEveryRow) {
  const ProfileReport& r = run().report;
  ASSERT_EQ(r.rows.size(), 12u);
  const fs::path dir = temp_dir("profile");
  const auto paths = write_profile_files(r, dir.string());
  ASSERT_EQ(paths.size(), 4u);
  for (const auto& p : paths) EXPECT_TRUE(fs::exists(p)) << p;
  const std::string csv = slurp(dir / "profile.csv");
  EXPECT_EQ(count_lines(csv), r.rows.size() + 1);
  EXPECT_EQ(csv.rfind("context,policy,budget,", 0), 0u);
  EXPECT_NE(csv.find("\n400,snapkv,64,1,1,"), std::string::npos) << csv;

  const json j = parse_json(slurp(dir / "profile.json"));
  EXPECT_EQ(j.at("model").get<std::string>(), r.model);
  EXPECT_EQ(j.at("gen").get<uint32_t>(), 16u);
  ASSERT_EQ(j.at("rows").size(), r.rows.size());
  for (size_t k = 0; k < r.rows.size(); ++k) {
    EXPECT_EQ(j.at("rows").at(k).at("policy").get<std::string>(), r.rows[k].policy);
    EXPECT_EQ(j.at("rows").at(k).at("kv_bytes").get<uint64_t>(), r.rows[k].kv_bytes);
    EXPECT_EQ(j.at("rows").at(k).at("top1").is_null(), std::isnan(r.rows[k].top1));
  }

  const std::string svg = slurp(dir / "profile.svg");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  expect_well_formed_xml(svg);
  for (const auto& p : r.policies) EXPECT_NE(svg.find(">" + p + "<"), std::string::npos) << p << " in the legend";
  for (const char* t : {"KV cache", "Peak device memory", "Decode speed", "top-1", "tokens/s", "KiB"})
    EXPECT_NE(svg.find(t), std::string::npos) << t;

  const std::string html = slurp(dir / "profile.html");
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("<table>"), std::string::npos);
  EXPECT_NE(html.find("</html>"), std::string::npos);

  const std::string table = profile_table(r);
  EXPECT_EQ(count_lines(table), 3 + 2 + r.rows.size()) << table;  // 2 header lines, blank, head, rule, rows
  fs::remove_all(dir);
}

TEST_F(ProfileEngine, BudgetCoveringThePromptIsExact) {
  ProfileOptions o;
  o.contexts = {40};
  o.specs = {spec(KvPolicy::SnapKV, 64, 8), spec(KvPolicy::StreamingLLM, 64, 8)};
  o.gen = 8;
  const ProfileReport r = run_profile(stories_model(), o);
  ASSERT_EQ(r.rows.size(), 3u);
  for (size_t k = 1; k < 3; ++k) {
    const ProfileRow& x = r.rows[k];
    SCOPED_TRACE(x.policy);
    ASSERT_TRUE(x.ran) << x.error;
    EXPECT_EQ(x.kv_bytes, x.full_kv_bytes);
    EXPECT_DOUBLE_EQ(x.ratio, 1.0);
    EXPECT_EQ(x.steps, 8u);
    EXPECT_DOUBLE_EQ(x.top1, 1.0);
    EXPECT_LT(x.kl_mean, 1e-4);
  }
}

TEST_F(ProfileEngine, FullThatDoesNotFitStillRunsThePolicies) {
  const Model& m = stories_model();
  ProfileOptions o;
  // long enough that the full f16 cache (every layer) outweighs a compressing prefill's transient
  // buffers (the prompt's hidden states and one layer's full K/V): full and compressed peaks far apart
  o.contexts = {2000};
  o.specs = {spec(KvPolicy::SnapKV, 64, 8), spec(KvPolicy::StreamingLLM, 64, 8)};
  o.gen = 8;
  o.n_batch = 16;
  auto peak_of = [&](const KvPolicyOptions& kv) {
    MemoryQuery q;
    q.prompt_len = 2000, q.n_ctx = 2008, q.n_batch = 16, q.kv = kv;
    q.decode_chunk = m.attention().decode_chunk;
    return estimate_memory(m.config(), 0, q).peak;
  };
  const uint64_t full = peak_of(KvPolicyOptions{});
  const uint64_t snap = std::max(peak_of(o.specs[0].kv), peak_of(o.specs[1].kv));
  ASSERT_LT(snap + 64 * 1024, full) << "the test needs room between the two peaks";
  MemoryTracker& mem = ctx().memory();
  const uint64_t old_budget = mem.budget();
  mem.set_budget(mem.current() + (full + snap) / 2);
  ProfileReport r;
  try {
    r = run_profile(m, o);
  } catch (...) {
    mem.set_budget(old_budget);
    throw;
  }
  mem.set_budget(old_budget);
  ASSERT_EQ(r.rows.size(), 3u);
  const ProfileRow& f = r.rows[0];
  EXPECT_EQ(f.policy, "full");
  EXPECT_FALSE(f.ran);
  EXPECT_FALSE(f.fits);
  EXPECT_NE(f.error.find("budget"), std::string::npos) << f.error;
  EXPECT_EQ(f.kv_bytes, f.full_kv_bytes) << "an estimate for the row that did not run";
  EXPECT_NE(profile_table(r).find("does not fit"), std::string::npos);
  for (size_t k = 1; k < 3; ++k) {
    const ProfileRow& x = r.rows[k];
    SCOPED_TRACE(x.policy);
    ASSERT_TRUE(x.ran) << x.error;
    EXPECT_GT(x.ratio, 1.0);
    EXPECT_EQ(x.steps, 0u) << "no full run to compare with";
    EXPECT_TRUE(std::isnan(x.top1));
    EXPECT_TRUE(std::isnan(x.kl_mean));
    EXPECT_LE(x.peak_bytes, (full + snap) / 2);
  }
  const json j = parse_json(profile_json(r));
  EXPECT_FALSE(j.at("rows").at(0).at("fits").get<bool>());
  EXPECT_TRUE(j.at("rows").at(1).at("top1").is_null());
}

TEST(ProfileDryRun, EqualsTheMemoryModel) {
  const GgufFile f = GgufFile::open(model_path("stories260K.gguf"));
  const ModelConfig c = ModelConfig::from_gguf(f);
  const uint64_t weights = 1 << 20;
  ProfileOptions o = stories_options();
  o.contexts = {400, 128, 1024, 128};  // sorted and de-duplicated in the report
  // A budget that the full cache at 1024 tokens does not meet, and everything else does.
  MemoryQuery q;
  q.prompt_len = 1024, q.n_ctx = 1024 + o.gen, q.n_batch = o.n_batch;
  const uint64_t budget = weights + estimate_memory(c, 0, q).peak - 1;
  const ProfileReport r = dry_run_profile(c, weights, budget, o);
  EXPECT_TRUE(r.dry_run);
  EXPECT_EQ(r.contexts, (std::vector<uint32_t>{128, 400, 1024}));
  ASSERT_EQ(r.rows.size(), 3u * 4u);
  size_t i = 0;
  for (uint32_t L : r.contexts) {
    for (size_t s = 0; s <= o.specs.size(); ++s) {
      const ProfileRow& x = r.rows[i++];
      q.prompt_len = L, q.n_ctx = L + o.gen;
      q.kv = s == 0 ? KvPolicyOptions{} : o.specs[s - 1].kv;
      const MemoryEstimate e = estimate_memory(c, 0, q);
      SCOPED_TRACE(std::to_string(L) + " " + x.policy);
      EXPECT_FALSE(x.ran);
      EXPECT_EQ(x.kv_bytes, e.kv_cache);
      EXPECT_EQ(x.full_kv_bytes, e.kv_full_equivalent);
      EXPECT_EQ(x.est_peak_bytes, e.peak);
      EXPECT_EQ(x.fits, weights + e.peak <= budget);
      EXPECT_EQ(x.fits, !(L == 1024 && s == 0));
    }
  }
  const std::string t = profile_table(r);
  EXPECT_NE(t.find("does not fit"), std::string::npos) << t;
  EXPECT_NO_THROW(parse_json(profile_json(r)));
  expect_well_formed_xml(profile_svg(r));
}

TEST(ProfileDryRun, ContextListsAndRunLengths) {
  EXPECT_EQ(parse_token_counts("4194303k", "c"), std::vector<uint32_t>{4194303u * 1024});
  expect_error([] { parse_token_counts("4194304k", "c"); }, "'4194304k' is not a positive token count");
  // v * 1024 wrapped to 1024 (2^54 + 1 -> 2^64 + 1024) and to 0 for a negative number.
  expect_error([] { parse_token_counts("18014398509481985k", "c"); },
               "'18014398509481985k' is not a positive token count");
  expect_error([] { parse_token_counts("-18014398509481984k", "c"); }, "is not a positive token count");
  expect_error([] { parse_token_counts("-1", "c"); }, "is not a positive token count");
  expect_error([] { parse_token_counts("99999999999999999999999", "c"); }, "is not a positive token count");
  // Each run holds L + gen positions in a 32-bit n_ctx.
  ProfileOptions o;
  o.gen = 16;
  o.contexts = {kU32Max - 8};
  expect_error([&] { dry_run_profile(tiny_config(), 0, 0, o); },
               "context length 4294967287 plus 16 generated tokens is more than the 16777216 positions");
  o.contexts = {kMaxContext - 16};
  EXPECT_NO_THROW(dry_run_profile(tiny_config(), 0, 0, o));
  o.contexts = {kMaxContext - 15};
  expect_error([&] { dry_run_profile(tiny_config(), 0, 0, o); }, "positions a session may hold");
}

TEST(ProfileReportTest, TokenCountsAndKl) {
  EXPECT_EQ(parse_token_counts("512,1k,2K, 4096", "x"), (std::vector<uint32_t>{512, 1024, 2048, 4096}));
  EXPECT_THROW(parse_token_counts("512,abc", "x"), Error);
  EXPECT_THROW(parse_token_counts("0", "x"), Error);
  EXPECT_THROW(parse_token_counts("1,,2", "x"), Error);
  const std::vector<float> p = {0.0f, 0.0f}, q = {float(std::log(3.0)), 0.0f};
  EXPECT_NEAR(kl_divergence(p, q), 0.5 * std::log(0.5 / 0.75) + 0.5 * std::log(0.5 / 0.25), 1e-6);
  EXPECT_EQ(kl_divergence(q, q), 0.0);
}

TEST_F(ProfileEngine, PromptIsDeterministicText) {
  const Model& m = stories_model();
  const auto a = profile_prompt(m, 300), b = profile_prompt(m, 300);
  ASSERT_EQ(a.size(), 300u);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a[0], m.tokenizer().bos());
  EXPECT_NE(m.tokenizer().decode(a).find("Lily"), std::string::npos);
  EXPECT_EQ(profile_prompt(m, 2).size(), 2u);
}

// ---- the CLI: --json prints exactly one JSON object ----

using CliRun = CliResult;

TEST(ProfileCli, JsonIsExactlyOneObjectAndFilesAreWritten) {
  const fs::path dir = temp_dir("profile-cli");
  const CliRun r =
      run_cli({"profile", "-m", model_path("stories260K.gguf"), "--contexts", "64,100", "--kv-budget", "48",
               "--kv-window", "8", "--kv-policy", "snapkv,h2o", "--gen", "4", "--json", "--out", dir.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  json j;
  ASSERT_NO_THROW(j = parse_json(r.out)) << r.out;
  EXPECT_EQ(j.at("rows").size(), 6u);
  EXPECT_EQ(j.at("policies").at(2).get<std::string>(), "h2o");
  for (const char* f : {"profile.csv", "profile.json", "profile.svg", "profile.html"})
    EXPECT_TRUE(fs::exists(dir / f)) << f;
  fs::remove_all(dir);
}

// Written to a file (not a terminal), the long commands say what they run at once, then a line
// per finished step with its time and what is left, so that logs and CI show progress.
TEST(ProfileCli, ProgressInALogIsALinePerFinishedStep) {
  const fs::path dir = temp_dir("profile-log");
  const CliRun r = run_cli({"profile", "-m", model_path("stories260K.gguf"), "--contexts", "64,100", "--kv-budget",
                            "48", "--kv-window", "8", "--kv-policy", "snapkv", "--gen", "4", "--out", dir.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<std::string> lines;
  for (size_t a = 0, b; (b = r.err.find('\n', a)) != std::string::npos; a = b + 1) lines.push_back(r.err.substr(a, b - a));
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines[0].rfind("profile " + model_path("stories260K.gguf") + ": 2 contexts x 2 KV configurations", 0), 0u)
      << r.err;
  // one line per run (2 contexts x full and snapkv), the last one done
  std::vector<std::string> steps;
  for (const std::string& l : lines)
    if (l.size() > 6 && l[0] == '[' && l[5] == ']') steps.push_back(l);
  ASSERT_EQ(steps.size(), 4u) << r.err;
  EXPECT_NE(steps[0].find("L=64 full: "), std::string::npos) << steps[0];
  EXPECT_NE(steps[0].find(" left"), std::string::npos) << steps[0];
  EXPECT_EQ(steps[3].rfind("[100%] L=100 snapkv: ", 0), 0u) << steps[3];
  EXPECT_NE(steps[3].find(", done"), std::string::npos) << steps[3];
  EXPECT_EQ(r.err.find('\r'), std::string::npos) << "no bar redrawn in place";
  // pack: a line per tenth of the prefill
  const CliRun p = run_cli({"pack", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time, there was a girl",
                            "-o", (dir / "p.svkv").string()});
  ASSERT_EQ(p.code, 0) << p.err;
  EXPECT_EQ(p.err.rfind("pack " + model_path("stories260K.gguf") + " -> ", 0), 0u) << p.err;
  EXPECT_NE(p.err.find("] prefill 90-100%: "), std::string::npos) << p.err;
  fs::remove_all(dir);
}

TEST(ProfileCli, DryRunMarksWhatDoesNotFit) {
  const fs::path dir = temp_dir("profile-dry");
  const CliRun r = run_cli({"profile", "--synthetic", "8b-attn", "--contexts", "8k,32k,128k", "--kv-budget", "1024",
                            "--dry-run", "--max-device-memory", "24G", "--out", dir.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("128K     full"), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n') > 12, true);
  size_t nofit = 0;
  for (size_t p = 0; (p = r.out.find("does not fit", p)) != std::string::npos; ++p) ++nofit;
  EXPECT_EQ(nofit, 1u) << "only the full cache at 128K exceeds 24 GiB:\n" << r.out;
  const CliRun bad = run_cli({"profile", "--synthetic", "nope", "--dry-run", "--out", dir.string()});
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("unknown --synthetic 'nope'"), std::string::npos) << bad.err;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace snapvk::test
