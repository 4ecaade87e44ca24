#pragma once
// KV-cache policies: which prompt entries each layer/head keeps after prefill. All of them
// run through the same pipeline (scores, pooling, top-K, gather); see docs/snapkv.md.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "host/kernels/attention.h"

namespace snapvk {

enum class KvPolicy { Full, SnapKV, PyramidKV, StreamingLLM, H2O, AdaKV };
const char* kv_policy_name(KvPolicy p);
std::optional<KvPolicy> parse_kv_policy(std::string_view name);

struct KvPolicyOptions {
  KvPolicy policy = KvPolicy::Full;
  uint32_t budget = 0;              // C: entries kept per head, window included (0: use ratio)
  float ratio = 0.0f;               // C = ceil(ratio * L) when budget is 0
  uint32_t window = 32;             // W: the observation window, always kept (the paper's LongBench W)
  uint32_t kernel = 7;              // pooling kernel (odd; the paper's 7)
  bool avg_pool = false;            // max (default) or avg pooling
  uint32_t pool_ahead = 0;          // pooling also lends a vote to this many positions after it (0: the paper's)
  uint32_t complete_words = 4;      // a kept token brings the rest of its word or number, up to this many
                                    // tokens either way (0: off, the paper's; docs/fidelity.md: why 4)
  GqaAgg gqa = GqaAgg::Mean;        // query-head votes -> KV-head vote
  uint32_t sinks = 4;               // StreamingLLM: first tokens always kept
  float adakv_floor = 0.2f;         // Ada-KV: per-head minimum share of the budget
  uint32_t pyramid_beta = 20;       // PyramidKV: last layer keeps (C - W) / beta
  uint32_t h2o_max_prompt = 16384;  // H2O scores every query against every key: refuse longer prompts

  // Throws snapvk::Error (InvalidArgument, with the option as its param) naming the problem
  // (even kernel, W >= C, ratio outside (0, 1], ...).
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

  // Calls f(name, field) for every field, in a fixed order: the one list that serialisation
  // (packs, docs/packs.md) writes and reads. A new field is one line here; a pack without it
  // reads as its default.
  template <class Self, class F>
  static void visit_fields(Self& o, F&& f) {
    f("policy", o.policy);
    f("budget", o.budget);
    f("ratio", o.ratio);
    f("window", o.window);
    f("kernel", o.kernel);
    f("avg_pool", o.avg_pool);
    f("pool_ahead", o.pool_ahead);
    f("gqa", o.gqa);
    f("sinks", o.sinks);
    f("adakv_floor", o.adakv_floor);
    f("pyramid_beta", o.pyramid_beta);
    f("h2o_max_prompt", o.h2o_max_prompt);
    f("complete_words", o.complete_words);
  }
};

}  // namespace snapvk
