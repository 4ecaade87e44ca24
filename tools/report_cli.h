#pragma once
// Pieces shared by the report commands (profile, eval, perplexity): KV configuration lists,
// context lists, a progress bar, the list of files written.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "host/report/profile.h"
#include "tools/cli.h"

namespace snapvk::cli {

// The non-empty items of a comma-separated list.
std::vector<std::string> split_items(const std::string& s);

// The KV configurations: each compressing policy of the list at each budget (or at --kv-ratio),
// and the full cache first when listed and keep_full; kv_type gets the checked --kv-type.
std::vector<ProfileSpec> make_specs(const SessionCli& base, const std::string& policies, const std::string& budgets,
                                    bool keep_full, KvType& kv_type);
// --kv-policy and --kv-budget as lists, and the other options of the table but -c.
void add_kv_list_options(CLI::App& app, SessionCli& kv, std::string& policies, std::string& budgets,
                         const std::string& policies_help, const std::string& budget_help);
// The contexts of `list` within the model's training context (at least one).
std::vector<uint32_t> default_contexts(const char* list, uint32_t n_ctx_train);
void print_files(const std::vector<std::string>& paths);

// A progress bar on stderr, only when stderr is a terminal (and never with --json).
class ProgressBar {
 public:
  explicit ProgressBar(bool wanted) : on_(wanted && isatty(fileno(stderr))) {}
  ~ProgressBar() { finish(); }
  void update(double f, const std::string& what) {
    if (!on_) return;
    const auto now = std::chrono::steady_clock::now();
    if (shown_ && now - last_ < std::chrono::milliseconds(100) && f < 1.0) return;
    last_ = now;
    shown_ = true;
    const int width = 30, filled = int(f * width + 0.5);
    std::string bar(size_t(filled), '#');
    bar += std::string(size_t(width - filled), '.');
    std::fprintf(stderr, "\r[%s] %3d%%  %s\x1b[K", bar.c_str(), int(f * 100 + 0.5), what.c_str());
    std::fflush(stderr);
  }
  void finish() {
    if (on_ && shown_) std::fprintf(stderr, "\r\x1b[K");
    shown_ = false;
  }
  std::function<void(double, const std::string&)> callback() {
    return [this](double f, const std::string& w) { update(f, w); };
  }

 private:
  bool on_ = false, shown_ = false;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace snapvk::cli
