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
// and the full cache first when listed and keep_full, each with each KV type of `types` ("f16,
// q4_0, q8_0/q4_0": K/V). The full cache in f16 is the reference; with other types, the full
// policy is one more configuration ("full:q4_0").
std::vector<ProfileSpec> make_specs(const SessionCli& base, const std::string& policies, const std::string& budgets,
                                    bool keep_full, const std::string& types);
// --kv-policy, --kv-budget and --kv-type as lists, and the other options of the table but -c.
void add_kv_list_options(CLI::App& app, SessionCli& kv, std::string& policies, std::string& budgets,
                         std::string& types, const std::string& policies_help, const std::string& budget_help);
// "q4_0" (both) or "q8_0/q4_0" (K/V); throws naming --kv-type and the choices.
KvTypes parse_kv_types(const std::string& text);
// The contexts of `list` within the model's training context (at least one).
std::vector<uint32_t> default_contexts(const char* list, uint32_t n_ctx_train);
void print_files(const std::vector<std::string>& paths);

// Progress on stderr (never with --json). On a terminal, a bar redrawn in place. Otherwise (a
// log file, CI) plain lines: `title` at once, then one line per finished step (a step ends when
// the progress names another), with its time, the share done and an estimate of what is left.
class ProgressBar {
 public:
  explicit ProgressBar(bool wanted, const std::string& title = {});
  ~ProgressBar() { finish(); }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  void update(double f, const std::string& what);
  // Clears the bar; in lines, ends the last step.
  void finish();
  std::function<void(double, const std::string&)> callback() {
    return [this](double f, const std::string& w) { update(f, w); };
  }

 private:
  using Clock = std::chrono::steady_clock;
  bool on_ = false, tty_ = false, shown_ = false;
  Clock::time_point start_ = Clock::now(), last_{}, step_start_{};
  std::string step_;  // lines: the step running now
  void end_step(double f);
};

}  // namespace snapvk::cli
