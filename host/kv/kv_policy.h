#pragma once
// KV-cache policies: which prompt entries each layer/head keeps after prefill. All of them
// run through the same pipeline (scores, pooling, top-K, gather); see docs/snapkv.md.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "host/kernels/attention.h"
#include "host/model/model.h"
#include "runtime/error.h"
#include "runtime/names.h"

namespace snapvk {

enum class KvPolicy { Full, SnapKV, PyramidKV, StreamingLLM, H2O, AdaKV };
// By name, in the C API's order (snapvk_kv_policy): the one list of policies.
inline constexpr Named<KvPolicy> kKvPolicyNames[] = {
    {"full", KvPolicy::Full},         {"snapkv", KvPolicy::SnapKV}, {"pyramidkv", KvPolicy::PyramidKV},
    {"streamingllm", KvPolicy::StreamingLLM}, {"h2o", KvPolicy::H2O},      {"adakv", KvPolicy::AdaKV}};
constexpr std::span<const Named<KvPolicy>> names(KvPolicy) { return kKvPolicyNames; }
const char* kv_policy_name(KvPolicy p);
std::optional<KvPolicy> parse_kv_policy(std::string_view name);

// Pooling of the window's votes along the prompt.
enum class KvPool { Max, Avg };
inline constexpr Named<KvPool> kKvPoolNames[] = {{"max", KvPool::Max}, {"avg", KvPool::Avg}};
constexpr std::span<const Named<KvPool>> names(KvPool) { return kKvPoolNames; }

// Where an option may be set besides the CLI and the C API (which take every option).
enum OptionScope : uint32_t { kSessionWide = 0, kRequest = 1 };

// The KV options a user sets, declared once: X(key, member, flag, scope, lo, hi, help) for each.
//   key     the option's name: the C API's snapvk_session_options field, the server's request
//           field, the Param an error about it carries (opt::kv_window), and, less its "kv_", the
//           pack header's field
//   member  the KvPolicyOptions field (P is its prefix: empty here, "kv." in SessionOptions)
//   flag    the CLI's spelling
//   scope   kRequest: a request of `snapvk serve` may set it too
//   lo, hi  the bounds of a number (validate() checks what depends on other fields)
//   help    one line for --help; choices of an enum are appended from its names()
// Adding an option: a row here, a field below with its default, its C field in
// include/snapvk/snapvk.h, and the code that uses it. The CLI, the C API, the server, packs
// and reports walk this table (host/session/options.h).
#define SNAPVK_KV_OPTIONS(X, P)                                                                                     \
  X(kv_policy, P policy, "--kv-policy", kRequest, 0, 0, "KV policy")                                              \
  X(kv_budget, P budget, "--kv-budget", kRequest, 1, kMaxContext, "Entries kept per KV head, window included (C)") \
  X(kv_ratio, P ratio, "--kv-ratio", kRequest, 0, 1, "Budget as a share of the prompt length, in (0, 1]")          \
  X(kv_window, P window, "--kv-window", kRequest, 1, kMaxContext,                                                  \
    "Observation window W: the last prompt tokens, always kept")                                                  \
  X(kv_kernel, P kernel, "--kv-kernel", kRequest, 1, kMaxContext, "Pooling kernel size (odd)")                     \
  X(kv_pool, P pool, "--kv-pool", kRequest, 0, 0, "Pooling of the window's votes")                                 \
  X(kv_pool_ahead, P pool_ahead, "--kv-pool-ahead", kRequest, 0, kMaxContext,                                      \
    "Pooling also keeps this many positions after each voted one (0: the paper's symmetric pooling)")             \
  X(kv_complete_words, P complete_words, "--kv-complete-words", kRequest, 0, kMaxContext,                          \
    "A kept token brings the rest of its word or number, up to this many tokens either way (0: off)")             \
  X(kv_gqa, P gqa, "--kv-gqa", kRequest, 0, 0, "Query-head vote aggregation per KV head")                            \
  X(kv_sinks, P sinks, "--kv-sinks", kRequest, 0, kMaxContext, "StreamingLLM: the first tokens, always kept")

// The Params that errors about these options carry: opt::kv_window, ...
namespace opt {
#define SNAPVK_OPTION_PARAM(key, ...) inline constexpr Param key{#key};
SNAPVK_KV_OPTIONS(SNAPVK_OPTION_PARAM, )
#undef SNAPVK_OPTION_PARAM
}  // namespace opt

struct KvPolicyOptions {
  KvPolicy policy = KvPolicy::Full;
  uint32_t budget = 0;              // C: entries kept per head, window included (0: use ratio)
  float ratio = 0.0f;               // C = ceil(ratio * L) when budget is 0
  uint32_t window = 32;             // W: the observation window, always kept (the paper's LongBench W)
  uint32_t kernel = 7;              // pooling kernel (odd; the paper's 7)
  KvPool pool = KvPool::Max;        // max (the paper's) or avg pooling
  uint32_t pool_ahead = 0;          // pooling also lends a vote to this many positions after it (0: the paper's)
  uint32_t complete_words = 4;      // a kept token brings the rest of its word or number, up to this many
                                    // tokens either way (0: off, the paper's; docs/fidelity.md: why 4)
  GqaAgg gqa = GqaAgg::Mean;        // query-head votes -> KV-head vote
  uint32_t sinks = 4;               // StreamingLLM: first tokens always kept
  float adakv_floor = 0.2f;         // Ada-KV: per-head minimum share of the budget
  uint32_t pyramid_beta = 20;       // PyramidKV: last layer keeps (C - W) / beta
  uint32_t h2o_max_prompt = 16384;  // H2O scores every query against every key: refuse longer prompts

  // Throws snapvk::Error (InvalidArgument, with the option as its param) naming the problem
  // (even kernel, W >= C, ratio outside (0, 1], a budget for the full policy, ...).
  void validate() const;
  bool operator==(const KvPolicyOptions&) const = default;  // every field
  bool compresses() const { return policy != KvPolicy::Full; }
  // Whether the selection ranks pooled window votes (SnapKV, PyramidKV, Ada-KV): where pooling
  // and word completion apply.
  bool pools() const {
    return policy == KvPolicy::SnapKV || policy == KvPolicy::PyramidKV || policy == KvPolicy::AdaKV;
  }
  // Whether a compressing prefill completes words (needs the prompt's words, Tokenizer::word_continuations).
  bool completes_words() const { return complete_words && pools(); }
  // C for a prompt of L tokens.
  uint32_t budget_for(uint32_t L) const;
  // Per-layer C (PyramidKV falls linearly from layer 0 to the last; others are uniform).
  std::vector<uint32_t> layer_budgets(uint32_t L, uint32_t n_layer) const;
  // Prompt queries whose attention votes for the positions to keep: the observation window,
  // or (H2O) every query of the prompt.
  uint32_t voting_queries(uint32_t L) const;
  // Throws snapvk::Error when this policy cannot compress a prompt of L tokens (H2O's limit).
  void check_prompt(uint32_t L) const;

  // Calls f(name, field) for the fields no option sets (policy internals): packs save them
  // beside the options of SNAPVK_KV_OPTIONS. A pack without one reads as its default.
  template <class Self, class F>
  static void visit_internal_fields(Self& o, F&& f) {
    f("adakv_floor", o.adakv_floor);
    f("pyramid_beta", o.pyramid_beta);
    f("h2o_max_prompt", o.h2o_max_prompt);
  }
};

}  // namespace snapvk
