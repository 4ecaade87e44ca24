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

KvTypes parse_kv_types(const std::string& text) {
  const size_t slash = text.find('/');
  KvTypes t;
  for (auto [part, out] : {std::pair{text.substr(0, slash), &t.k},
                           std::pair{slash == std::string::npos ? text : text.substr(slash + 1), &t.v}}) {
    const auto v = parse_kv_type(part);
    if (!v)
      throw Error(ErrorKind::InvalidArgument, "unknown --kv-type '" + part + "' (" + names_of(names(KvType{})) +
                                                  "; K/V as q8_0/q4_0)");
    *out = *v;
  }
  return t;
}

std::vector<ProfileSpec> make_specs(const SessionCli& base, const std::string& policies, const std::string& budgets,
                                    bool keep_full, const std::string& types) {
  std::vector<KvTypes> ts;
  for (const std::string& t : split_items(types)) ts.push_back(parse_kv_types(t));
  if (ts.empty()) ts.push_back(KvTypes{});
  // The name of a configuration at one KV type: the type follows unless it is the only one, f16.
  const bool typed = ts.size() > 1 || !(ts[0] == KvTypes{});
  auto with = [&](std::string label, KvTypes t) { return typed ? label + ":" + kv_types_name(t) : label; };
  std::vector<uint32_t> bs;
  if (!budgets.empty()) bs = parse_token_counts(budgets, "--kv-budget");
  if (bs.empty()) bs.push_back(0);  // --kv-ratio (checked by session_options)
  // The options of one policy at one budget, checked.
  auto options = [&](const std::string& policy, uint32_t budget) {
    SessionCli k = base;
    k.text["kv_policy"] = policy;
    k.so.kv.budget = budget;
    if (budget || parse_kv_policy(policy) == KvPolicy::Full) k.so.kv.ratio = 0;
    return session_options(k);
  };
  std::vector<ProfileSpec> specs;
  for (const std::string& p : split_items(policies)) {
    const bool full = parse_kv_policy(p) == KvPolicy::Full;
    const SessionOptions first = options(p, full ? 0 : bs.front());  // names an unknown policy
    if (!first.kv.compresses()) {
      for (KvTypes t : ts) {
        const ProfileSpec s{t == KvTypes{} ? "full" : with("full", t), first.kv, t};
        if ((keep_full || !s.is_reference()) &&
            std::none_of(specs.begin(), specs.end(), [&](const ProfileSpec& o) { return o.label == s.label; }))
          specs.push_back(s);
      }
      continue;
    }
    for (uint32_t b : bs) {
      const SessionOptions so = options(p, b);
      std::string label = kv_policy_name(so.kv.policy);
      if (bs.size() > 1) label += "@" + std::to_string(b);
      for (KvTypes t : ts) {
        const std::string typed_label = with(label, t);
        if (std::none_of(specs.begin(), specs.end(), [&](const ProfileSpec& s) { return s.label == typed_label; }))
          specs.push_back({typed_label, so.kv, t});
      }
    }
  }
  if (specs.empty() && !keep_full) options("full", 0);  // only "full" was asked for: still check the rest
  return specs;
}

void add_kv_list_options(CLI::App& app, SessionCli& kv, std::string& policies, std::string& budgets,
                         std::string& types, const std::string& policies_help, const std::string& budget_help) {
  app.add_option("--kv-policy", policies, policies_help)->capture_default_str();
  app.add_option("--kv-budget", budgets, budget_help);
  app.add_option("--kv-type", types,
                 "KV cache types, comma-separated, each compared with the full f16 cache (K/V as q8_0/q4_0): " +
                     names_of(names(KvType{}), ", "))
      ->capture_default_str();
  add_session_options(app, kv, {"kv_policy", "kv_budget", "n_ctx", "kv_type_k", "kv_type_v"});
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

ProgressBar::ProgressBar(bool wanted, const std::string& title)
    : on_(wanted), tty_(wanted && isatty(fileno(stderr))) {
  if (on_ && !tty_ && !title.empty()) {
    std::fprintf(stderr, "%s\n", title.c_str());
    std::fflush(stderr);
  }
}

namespace {
// "4.2 s", "3 min 20 s"
std::string duration_str(double s) {
  char buf[48];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%.1f s", s);
  else
    std::snprintf(buf, sizeof buf, "%d min %02d s", int(s / 60), int(s) % 60);
  return buf;
}
}  // namespace

void ProgressBar::end_step(double f) {
  if (step_.empty()) return;
  const auto now = Clock::now();
  const double took = std::chrono::duration<double>(now - step_start_).count();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  std::string left;
  if (f >= 1.0)
    left = "done";
  else if (f > 0.0)
    left = "about " + duration_str(elapsed * (1.0 - f) / f) + " left";
  std::fprintf(stderr, "[%3d%%] %s: %s%s%s\n", int(f * 100 + 0.5), step_.c_str(), duration_str(took).c_str(),
               left.empty() ? "" : ", ", left.c_str());
  std::fflush(stderr);
  step_.clear();
}

void ProgressBar::update(double f, const std::string& what) {
  if (!on_) return;
  const auto now = Clock::now();
  if (!tty_) {
    if (what == step_) return;
    end_step(f);
    if (what != "done") step_ = what, step_start_ = now;
    return;
  }
  if (shown_ && now - last_ < std::chrono::milliseconds(100) && f < 1.0) return;
  last_ = now;
  shown_ = true;
  const int width = 30, filled = int(f * width + 0.5);
  std::string bar(size_t(filled), '#');
  bar += std::string(size_t(width - filled), '.');
  std::fprintf(stderr, "\r[%s] %3d%%  %s\x1b[K", bar.c_str(), int(f * 100 + 0.5), what.c_str());
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (!on_) return;
  if (!tty_) return end_step(1.0);
  if (shown_) std::fprintf(stderr, "\r\x1b[K");
  shown_ = false;
}

}  // namespace snapvk::cli
