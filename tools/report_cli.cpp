#include "tools/report_cli.h"

#include <algorithm>

#include "runtime/error.h"

namespace snapvk::cli {

std::vector<std::string> split_items(const std::string& s) {
  std::vector<std::string> out;
  for (std::string& item : split_list(s))
    if (!item.empty()) out.push_back(std::move(item));
  return out;
}

std::vector<ProfileSpec> make_specs(const SessionCli& base, const std::string& policies, const std::string& budgets,
                                    bool keep_full, KvType& kv_type) {
  std::vector<uint32_t> bs;
  if (!budgets.empty()) bs = parse_token_counts(budgets, "--kv-budget");
  if (bs.empty()) bs.push_back(0);  // --kv-ratio (checked by session_options)
  // The options of one policy at one budget, checked.
  auto options = [&](const std::string& policy, uint32_t budget) {
    SessionCli k = base;
    k.text["kv_policy"] = policy;
    k.so.kv.budget = budget;
    if (budget || parse_kv_policy(policy) == KvPolicy::Full) k.so.kv.ratio = 0;
    const SessionOptions so = session_options(k);
    kv_type = so.kv_type;
    return so;
  };
  std::vector<ProfileSpec> specs;
  for (const std::string& p : split_items(policies)) {
    const bool full = parse_kv_policy(p) == KvPolicy::Full;
    const SessionOptions first = options(p, full ? 0 : bs.front());  // names an unknown policy
    if (!first.kv.compresses()) {
      if (keep_full &&
          std::none_of(specs.begin(), specs.end(), [](const ProfileSpec& s) { return !s.kv.compresses(); }))
        specs.push_back({"full", first.kv});
      continue;
    }
    for (uint32_t b : bs) {
      const SessionOptions so = options(p, b);
      std::string label = kv_policy_name(so.kv.policy);
      if (bs.size() > 1) label += "@" + std::to_string(b);
      if (std::any_of(specs.begin(), specs.end(), [&](const ProfileSpec& s) { return s.label == label; })) continue;
      specs.push_back({label, so.kv});
    }
  }
  if (specs.empty() && !keep_full) options("full", 0);  // only "full" was asked for: still check the rest
  return specs;
}

void add_kv_list_options(CLI::App& app, SessionCli& kv, std::string& policies, std::string& budgets,
                         const std::string& policies_help, const std::string& budget_help) {
  app.add_option("--kv-policy", policies, policies_help)->capture_default_str();
  app.add_option("--kv-budget", budgets, budget_help);
  add_session_options(app, kv, {"kv_policy", "kv_budget", "n_ctx"});
}

std::vector<uint32_t> default_contexts(const char* list, uint32_t n_ctx_train) {
  std::vector<uint32_t> v = parse_token_counts(list, "contexts"), out;
  for (uint32_t L : v)
    if (!n_ctx_train || L <= n_ctx_train) out.push_back(L);
  if (out.empty()) out.push_back(std::min<uint32_t>(v.front(), n_ctx_train));
  return out;
}

void print_files(const std::vector<std::string>& paths) {
  std::fprintf(stderr, "wrote");
  for (const auto& p : paths) std::fprintf(stderr, " %s", p.c_str());
  std::fprintf(stderr, "\n");
}

}  // namespace snapvk::cli
