// --kv-* options shared by every command that builds a session.
#include "runtime/error.h"
#include "tools/cli.h"

namespace snapvk::cli {

void add_kv_tuning_options(CLI::App& app, KvCliOptions& o) {
  app.add_option("--kv-window", o.window, "Observation window W: the last prompt tokens, always kept")
      ->capture_default_str();
  app.add_option("--kv-kernel", o.kernel, "Pooling kernel size (odd)")->capture_default_str();
  app.add_option("--kv-pool", o.pool, "Pooling: max or avg")->capture_default_str();
  app.add_option("--kv-pool-ahead", o.pool_ahead,
                 "Pooling also keeps this many positions after each voted one (0: the paper's symmetric pooling)")
      ->capture_default_str();
  app.add_option("--kv-complete-words", o.complete_words,
                 "A kept token brings the rest of its word or number, up to this many tokens either way (0: off)")
      ->capture_default_str();
  app.add_option("--kv-gqa", o.gqa, "Query-head vote aggregation per KV head: mean, max or sum")->capture_default_str();
  app.add_option("--kv-type", o.type, "KV cache storage: f16, f32 or q8_0")->capture_default_str();
}

void add_kv_options(CLI::App& app, KvCliOptions& o) {
  app.add_option("--kv-policy", o.policy, "KV policy: full, snapkv, pyramidkv, streamingllm, h2o, adakv")
      ->capture_default_str();
  app.add_option("--kv-budget", o.budget, "Entries kept per KV head, window included (C)");
  app.add_option("--kv-ratio", o.ratio, "Budget as a share of the prompt length, in (0, 1]");
  add_kv_tuning_options(app, o);
}

void apply_kv_options(const KvCliOptions& o, SessionOptions& out) {
  auto policy = parse_kv_policy(o.policy);
  if (!policy)
    throw Error(ErrorKind::InvalidArgument,
                "unknown --kv-policy '" + o.policy + "' (full, snapkv, pyramidkv, streamingllm, h2o, adakv)");
  auto type = parse_kv_type(o.type);
  if (!type) throw Error(ErrorKind::InvalidArgument, "unknown --kv-type '" + o.type + "' (f16, f32, q8_0)");
  if (o.pool != "max" && o.pool != "avg")
    throw Error(ErrorKind::InvalidArgument, "unknown --kv-pool '" + o.pool + "' (max, avg)");
  KvPolicyOptions& kv = out.kv;
  if (o.gqa == "mean")
    kv.gqa = GqaAgg::Mean;
  else if (o.gqa == "max")
    kv.gqa = GqaAgg::Max;
  else if (o.gqa == "sum")
    kv.gqa = GqaAgg::Sum;
  else
    throw Error(ErrorKind::InvalidArgument, "unknown --kv-gqa '" + o.gqa + "' (mean, max, sum)");
  if (*policy == KvPolicy::Full && (o.budget || o.ratio > 0))
    throw Error(ErrorKind::InvalidArgument,
                "--kv-budget/--kv-ratio need a compressing --kv-policy (snapkv, pyramidkv, streamingllm, h2o, adakv)");
  kv.policy = *policy;
  kv.budget = o.budget;
  kv.ratio = o.ratio;
  kv.window = o.window;
  kv.kernel = o.kernel;
  kv.avg_pool = o.pool == "avg";
  kv.pool_ahead = o.pool_ahead;
  kv.complete_words = o.complete_words;
  out.kv_type = *type;
  kv.validate();
}

void add_sampler_options(CLI::App& app, SamplerParams& sp, bool& seed_set) {
  app.add_option("--temp", sp.temp, "Temperature (0: greedy)")->capture_default_str()->check(CLI::Range(0.0f, 100.0f));
  app.add_option("--top-k", sp.top_k, "Top-k (<= 0: off)")->capture_default_str();
  app.add_option("--top-p", sp.top_p, "Top-p (1: off)")->capture_default_str()->check(CLI::Range(0.0f, 1.0f));
  app.add_option("--min-p", sp.min_p, "Min-p (0: off)")->capture_default_str()->check(CLI::Range(0.0f, 1.0f));
  app.add_option("--repeat-penalty", sp.repeat_penalty, "Repetition penalty (1: off)")->capture_default_str();
  app.add_option("--repeat-last-n", sp.repeat_last_n, "Tokens the penalty looks back over")->capture_default_str();
  app.add_option_function<uint64_t>(
      "-s,--seed", [&sp, &seed_set](uint64_t s) { sp.seed = s, seed_set = true; }, "Random seed");
}

}  // namespace snapvk::cli
