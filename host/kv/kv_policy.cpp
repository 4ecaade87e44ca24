#include "host/kv/kv_policy.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "runtime/error.h"

namespace snapvk {

const char* kv_policy_name(KvPolicy p) { return name_in(names(p), p); }

std::optional<KvPolicy> parse_kv_policy(std::string_view name) { return parse_in(names(KvPolicy{}), name); }

namespace {
// "snapkv, pyramidkv, ...": the policies that compress.
std::string compressing_policies() {
  std::string out;
  for (const auto& n : kKvPolicyNames)
    if (n.value != KvPolicy::Full) out += (out.empty() ? "" : ", ") + std::string(n.name);
  return out;
}
}  // namespace

void KvPolicyOptions::validate() const {
  if (policy == KvPolicy::Full) {
    if (budget || ratio != 0.0f)
      throw Error(ErrorKind::InvalidArgument,
                  "a KV budget or ratio needs a compressing KV policy (" + compressing_policies() +
                      "): the full policy keeps every entry",
                  budget ? opt::kv_budget : opt::kv_ratio);
    return;
  }
  const std::string who = std::string("KV policy ") + kv_policy_name(policy) + ": ";
  auto bad = [&](const std::string& what, Param p) { throw Error(ErrorKind::InvalidArgument, who + what, p); };
  if (budget == 0 && !(ratio > 0.0f && ratio <= 1.0f))
    bad("needs a KV budget C (entries kept per head) or a KV ratio r in (0, 1]",
        ratio == 0.0f ? opt::kv_budget : opt::kv_ratio);
  if (budget && ratio > 0.0f) bad("give either a KV budget or a KV ratio, not both", opt::kv_ratio);
  if (window == 0) bad("the KV window must be at least 1", opt::kv_window);
  if (kernel == 0 || kernel % 2 == 0)
    bad("the pooling kernel size must be odd (got " + std::to_string(kernel) + ")", opt::kv_kernel);
  // Bounded by the longest context, so that budget and window sums and the pooling offsets
  // (j +- kernel / 2 in 32-bit ints on the GPU) cannot wrap.
  auto at_most = [&](uint64_t v, const char* what, Param p) {
    if (v > kMaxContext)
      bad(std::string(what) + " " + std::to_string(v) + " is too large (at most " + std::to_string(kMaxContext) + ")",
          p);
  };
  at_most(budget, "the KV budget", opt::kv_budget);
  at_most(window, "the KV window", opt::kv_window);
  at_most(kernel, "the pooling kernel size", opt::kv_kernel);
  at_most(pool_ahead, "the pooling reach ahead", opt::kv_pool_ahead);
  at_most(complete_words, "the word completion reach", opt::kv_complete_words);
  if (policy == KvPolicy::StreamingLLM) at_most(sinks, "sinks", opt::kv_sinks);
  if (budget && window >= budget)
    bad("the KV window (" + std::to_string(window) + ") must be smaller than the KV budget (" + std::to_string(budget) +
            "); the budget includes the window",
        opt::kv_window);
  if (policy == KvPolicy::StreamingLLM && budget && uint64_t(sinks) + window > budget)
    bad("the KV budget " + std::to_string(budget) + " is smaller than the " + std::to_string(sinks) +
            " sink tokens plus the window",
        opt::kv_budget);
  if (policy == KvPolicy::PyramidKV && pyramid_beta == 0) bad("beta must be positive", Param::None);
  if (policy == KvPolicy::AdaKV && !(adakv_floor >= 0.0f && adakv_floor <= 1.0f))
    bad("the per-head floor must be in [0, 1]", Param::None);
}

uint32_t KvPolicyOptions::budget_for(uint32_t L) const {
  if (budget) return budget;
  const double r = ratio > 0.0f ? std::min(double(ratio), 1.0) : 0.0;  // (0, 1] once validated
  const uint32_t c = uint32_t(std::ceil(r * L));
  return uint32_t(std::min<uint64_t>(std::max<uint64_t>(c, uint64_t(window) + 1), UINT32_MAX));
}

std::vector<uint32_t> KvPolicyOptions::layer_budgets(uint32_t L, uint32_t n_layer) const {
  const uint32_t C = budget_for(L);
  std::vector<uint32_t> out(n_layer, C);
  // A prompt within the budget is kept whole, as in the reference: no layer is compressed.
  if (policy != KvPolicy::PyramidKV || n_layer < 2 || L <= C) return out;
  if (pyramid_beta == 0 || window >= C)
    throw Error(ErrorKind::InvalidArgument, "pyramidkv: beta must be positive and the window smaller than the budget");
  // As the reference (KVCache-Factory): min = (C-W)/beta, max = 2(C-W) - min, linear steps.
  // In 64 bits (2(C-W) + W exceeds 32 bits for C near 2^32); a budget of L or more keeps the layer whole.
  const uint64_t b = C - window;
  const uint64_t lo = b / pyramid_beta, hi = 2 * b - lo;
  const uint64_t step = (hi - lo) / (n_layer - 1);
  for (uint32_t l = 0; l < n_layer; ++l)
    out[l] = uint32_t(std::min<uint64_t>(std::max<uint64_t>(hi - l * step, 1) + window, UINT32_MAX));
  return out;
}

uint32_t KvPolicyOptions::voting_queries(uint32_t L) const { return policy == KvPolicy::H2O ? L : std::min(window, L); }

void KvPolicyOptions::check_prompt(uint32_t L) const {
  if (policy == KvPolicy::H2O && L > h2o_max_prompt)
    throw Error(ErrorKind::InvalidArgument,
                "h2o scores every prompt query against every key: " + std::to_string(L) +
                    " tokens is more than its limit of " + std::to_string(h2o_max_prompt) + "; use snapkv",
                opt::kv_policy);
}

}  // namespace snapvk
