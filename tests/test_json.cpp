// JSON output (nlohmann-json): the reports and the CLI's --json outputs parse back with their
// keys in the documented order; figures that are NaN (not run, no fidelity) are null; text
// that is not valid UTF-8 (generated text may end inside a character) comes out as U+FFFD
// in valid JSON, never as an exception.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/model/unicode.h"
#include "host/report/needle.h"
#include "host/report/profile.h"
#include "tests/cli_runner.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

using ojson = nlohmann::ordered_json;

std::vector<std::string> keys(const ojson& o) {
  std::vector<std::string> k;
  for (const auto& [key, v] : o.items()) k.push_back(key);
  return k;
}

// Every byte belongs to a well-formed UTF-8 sequence.
bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (static_cast<unsigned char>(s[i]) < 0x80) continue;
    const size_t n = unicode::utf8_valid_len(s, i);
    if (n == 0) return false;
    i += n - 1;
  }
  return true;
}

const std::string kFffd = "\xEF\xBF\xBD";

ProfileReport small_report() {
  ProfileReport r;
  r.model = "dir/m.gguf";
  r.model_name = "a \"quoted\"\\name\n\t\x01";
  r.n_layer = 2, r.n_head = 4, r.n_head_kv = 2, r.head_dim = 8, r.n_embd = 32, r.n_vocab = 512;
  r.device = "llvmpipe";
  r.weight_bytes = uint64_t(1) << 40;
  r.memory_budget = std::numeric_limits<uint64_t>::max();
  r.kv_type = "f16";
  r.gen = 16, r.n_batch = kDefaultBatch;
  r.policies = {"full", "snapkv"};
  r.contexts = {128};
  ProfileRow full;
  full.context = 128, full.policy = "full", full.ran = true, full.full_kv_bytes = full.kv_bytes = 4096;
  full.peak_bytes = 9000, full.est_peak_bytes = 9100, full.prefill_ms = 1.25, full.decode_tok_s = 400;
  ProfileRow snap;
  snap.context = 128, snap.policy = "snapkv", snap.budget = 64, snap.ran = false, snap.fits = false;
  snap.full_kv_bytes = 4096, snap.kv_bytes = 1638, snap.ratio = 2.5, snap.est_peak_bytes = 5000;
  snap.error = "does not fit";
  r.rows = {full, snap};
  r.notes = {"random weights"};
  r.total_s = 0.5;
  return r;
}

TEST(Json, ProfileReportParsesBackInOrderWithNaNAsNull) {
  const ProfileReport r = small_report();
  const std::string text = profile_json(r);
  EXPECT_EQ(text.find("nan"), std::string::npos) << text;
  EXPECT_EQ(text.find('\n'), std::string::npos) << "one line";
  const ojson j = ojson::parse(text);
  EXPECT_EQ(keys(j), (std::vector<std::string>{"model", "model_name", "shape", "synthetic", "dry_run", "device",
                                               "weight_bytes", "memory_budget", "kv_type", "gen", "n_batch", "policies",
                                               "contexts", "rows", "notes", "total_s"}));
  EXPECT_EQ(j["model_name"], r.model_name) << "escaped and back";
  EXPECT_EQ(keys(j["shape"]),
            (std::vector<std::string>{"n_layer", "n_head", "n_head_kv", "head_dim", "n_embd", "n_vocab"}));
  EXPECT_EQ(j["weight_bytes"].get<uint64_t>(), r.weight_bytes);
  EXPECT_EQ(j["memory_budget"].get<uint64_t>(), r.memory_budget) << "64-bit sizes stay exact";
  EXPECT_EQ(j["policies"], ojson({"full", "snapkv"}));
  EXPECT_EQ(j["contexts"], ojson({128}));
  ASSERT_EQ(j["rows"].size(), 2u);
  const ojson& ran = j["rows"][0];
  EXPECT_EQ(keys(ran),
            (std::vector<std::string>{"context",       "policy",       "budget",  "ran",        "fits",
                                      "full_kv_bytes", "kv_bytes",     "ratio",   "peak_bytes", "est_peak_bytes",
                                      "prefill_ms",    "score_ms",     "pool_ms", "select_ms",  "gather_ms",
                                      "compress_ms",   "decode_tok_s", "steps",   "top1",       "kl_mean",
                                      "kl_max",        "needle"}));
  EXPECT_EQ(ran["peak_bytes"], 9000);
  EXPECT_EQ(ran["prefill_ms"].get<double>(), 1.25);
  EXPECT_TRUE(ran["top1"].is_null()) << "full has no fidelity: NaN is null";
  EXPECT_TRUE(ran["kl_mean"].is_null());
  const ojson& not_ran = j["rows"][1];
  EXPECT_FALSE(not_ran["fits"].get<bool>());
  EXPECT_TRUE(not_ran["peak_bytes"].is_null());
  EXPECT_TRUE(not_ran["decode_tok_s"].is_null());
  EXPECT_FALSE(not_ran.contains("prefill_ms")) << "timings only for rows that ran";
  EXPECT_EQ(not_ran["ratio"].get<double>(), 2.5);
  EXPECT_EQ(not_ran["error"], "does not fit");
  EXPECT_EQ(j["notes"], ojson({"random weights"}));
  EXPECT_EQ(j["total_s"].get<double>(), 0.5);
}

NeedleReport needle_with_text(const std::string& generated) {
  NeedleReport r;
  r.model = "m.gguf", r.device = "dev";
  r.policies = {"full"}, r.contexts = {128}, r.depths = {50};
  NeedleCell c;
  c.policy = "full", c.context = 128, c.depth = 50, c.value = "12345", c.generated = generated;
  r.cells = {c};
  return r;
}

std::string generated_back(const std::string& generated) {
  std::string text;
  EXPECT_NO_THROW(text = needle_json(needle_with_text(generated))) << "bytes: " << generated.size();
  EXPECT_TRUE(valid_utf8(text));
  const ojson j = ojson::parse(text);
  EXPECT_EQ(keys(j), (std::vector<std::string>{"task", "model", "model_name", "device", "synthetic", "policies",
                                               "contexts", "depths", "cells", "notes", "total_s"}));
  EXPECT_EQ(keys(j["cells"][0]),
            (std::vector<std::string>{"policy", "context", "depth", "needle_pos", "value", "found", "generated"}));
  return j["cells"][0]["generated"].get<std::string>();
}

TEST(Json, InvalidUtf8InGeneratedTextBecomesReplacementCharacter) {
  // Valid text, escapes included, comes back as it was.
  const std::string ok = "caf\xC3\xA9 \xF0\x9F\x98\x80 \"q\" \\ \n\t\x01 end";
  EXPECT_EQ(generated_back(ok), ok);
  // A character cut short (a token may end inside one) is one U+FFFD; a stray byte is one.
  EXPECT_EQ(generated_back("caf\xC3\xA9 \xE2\x82|\xF0\x9F\x98\x80\xFF"),
            "caf\xC3\xA9 " + kFffd + "|\xF0\x9F\x98\x80" + kFffd);
  EXPECT_EQ(generated_back("ends inside \xE2\x82"), "ends inside " + kFffd);
  // RFC 3629: overlong forms, surrogates and code points past U+10FFFF are not UTF-8: each of
  // their bytes is refused.
  EXPECT_EQ(generated_back("\xC0\xAF"), kFffd + kFffd);
  EXPECT_EQ(generated_back("\xED\xA0\x80"), kFffd + kFffd + kFffd);
  EXPECT_EQ(generated_back("\xF4\x90\x80\x80"), kFffd + kFffd + kFffd + kFffd);
}

TEST(Json, AnyBytesMakeValidJson) {
  std::mt19937 rng(7);
  for (int n = 0; n < 2000; ++n) {
    std::string s(rng() % 24, '\0');
    for (char& c : s) c = char(rng() % 256);
    const std::string back = generated_back(s);
    EXPECT_TRUE(valid_utf8(back));
    if (valid_utf8(s)) {
      EXPECT_EQ(back, s);
    }
  }
}

// ---- the CLI's --json outputs ----

TEST(JsonCli, TokenizePrintsAnArray) {
  const CliResult r = run_cli({"tokenize", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out), nlohmann::json({1, 403, 407, 261, 378})) << r.out;
}

TEST(JsonCli, RunPrintsOneObject) {
  const CliResult r = run_cli({"run", "-m", model_path("stories260K.gguf"), "-p",
                               "Once upon a time, there was a little girl named Lily. She loved to play.", "-n", "4",
                               "--temp", "0", "-s", "18446744073709551615", "--kv-policy", "streamingllm",
                               "--kv-budget", "8", "--kv-window", "2", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  ojson j;
  ASSERT_NO_THROW(j = ojson::parse(r.out)) << r.out;
  EXPECT_EQ(keys(j), (std::vector<std::string>{"prompt_tokens", "generated_tokens", "text", "timings", "kv",
                                               "peak_device_bytes", "device", "seed"}));
  EXPECT_GT(j["prompt_tokens"].size(), 8u) << "longer than the budget";
  EXPECT_LE(j["kv"]["n_past"].get<size_t>(), j["prompt_tokens"].size() + 4);
  EXPECT_EQ(j["prompt_tokens"][0], 1) << "BOS";
  EXPECT_EQ(j["generated_tokens"].size(), 4u);
  EXPECT_FALSE(j["text"].get<std::string>().empty());
  EXPECT_EQ(keys(j["timings"]), (std::vector<std::string>{"prefill_ms", "decode_ms", "prefill_tok_s", "decode_tok_s"}));
  EXPECT_GT(j["timings"]["prefill_ms"].get<double>(), 0.0);
  EXPECT_EQ(keys(j["kv"]),
            (std::vector<std::string>{"policy", "type", "options", "bytes", "full_bytes", "ratio", "allocated_bytes",
                                      "n_ctx", "n_past", "score_ms", "pool_ms", "select_ms", "gather_ms"}));
  EXPECT_EQ(j["kv"]["policy"], "streamingllm");
  // Every option of the table, as the command line set it or by default.
  const ojson& opts = j["kv"]["options"];
  std::vector<std::string> want_keys;
  for (const OptionInfo& o : kOptions) want_keys.push_back(o.key);
  EXPECT_EQ(keys(opts), want_keys);
  EXPECT_EQ(opts["kv_policy"], "streamingllm");
  EXPECT_EQ(opts["kv_budget"], 8);
  EXPECT_EQ(opts["kv_window"], 2);
  EXPECT_EQ(opts["kv_kernel"], KvPolicyOptions{}.kernel);
  EXPECT_EQ(opts["kv_pool"], "max");
  EXPECT_EQ(opts["kv_type_k"], "f16");
  EXPECT_EQ(opts["kv_type_v"], "f16");
  EXPECT_EQ(opts["n_batch"], std::min(kDefaultBatch, j["kv"]["n_ctx"].get<uint32_t>())) << "the session's: at most n_ctx";
  EXPECT_EQ(j["kv"]["type"], "f16");
  EXPECT_GT(j["kv"]["ratio"].get<double>(), 1.0);
  EXPECT_GT(j["peak_device_bytes"].get<uint64_t>(), 0u);
  EXPECT_EQ(j["seed"].get<uint64_t>(), std::numeric_limits<uint64_t>::max()) << "a 64-bit seed stays exact";
}

TEST(JsonCli, DryRunPrintsTheMemoryModel) {
  const CliResult r = run_cli({"run", "-m", model_path("stories260K.gguf"), "-p", "Once upon a time", "-n", "4",
                               "--dry-run", "--max-device-memory", "1G"});
  ASSERT_EQ(r.code, 0) << r.err;
  ojson j;
  ASSERT_NO_THROW(j = ojson::parse(r.out)) << r.out;
  EXPECT_EQ(keys(j), (std::vector<std::string>{"prompt_tokens", "n_ctx", "policy", "options", "weights", "activations",
                                               "kv_cache", "kv_full_equivalent", "prefill_transient", "peak", "budget",
                                               "fits"}));
  EXPECT_EQ(j["options"]["kv_policy"], "full");
  EXPECT_EQ(j["prompt_tokens"], 5);
  EXPECT_EQ(j["budget"].get<uint64_t>(), uint64_t(1) << 30);
  EXPECT_TRUE(j["fits"].get<bool>());
  EXPECT_GE(j["peak"].get<uint64_t>(), j["weights"].get<uint64_t>() + j["kv_cache"].get<uint64_t>());
}

}  // namespace
}  // namespace snapvk::test
