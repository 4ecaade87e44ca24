#pragma once
// Shared pieces of the snapvk CLI: global options and the subcommands' entry points.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <initializer_list>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "host/session/sampler.h"
#include "host/session/session.h"
#include "runtime/context.h"

namespace snapvk::cli {

struct Globals {
  std::string device;              // --device
  uint64_t max_device_memory = 0;  // --max-device-memory
  // Parse and check the options, then stop before any file, device or output is touched: the
  // CLI fuzzer (fuzz/fuzz_cli.cpp). An exception other than snapvk::Error then propagates
  // instead of being printed, so the fuzzer reports it.
  bool check_only = false;
};
ContextOptions context_options(const Globals& g);

std::string bytes_str(uint64_t b);

// The session options of a command (-c, -b, --kv-type, --kv-policy, --kv-budget, ...), walked
// from the option table (host/session/options.h): numbers are bound to their fields, enums are
// kept as typed until session_options() checks them.
struct SessionCli {
  SessionOptions so;
  std::map<std::string, std::string, std::less<>> text;  // each enum option as typed, by key
};
// Registers every option of the table on `app` but those whose keys are in `skip`.
void add_session_options(CLI::App& app, SessionCli& o, std::initializer_list<std::string_view> skip = {});
// The checked options (throws snapvk::Error with a one-line message naming the option).
SessionOptions session_options(const SessionCli& o);
// Every option of the table and its value (enums by name), for --json reports.
nlohmann::ordered_json options_json(const SessionOptions& so);

// The sampling options of every command that generates (--temp, --top-k, --top-p, --min-p,
// --repeat-penalty, --repeat-last-n, -s/--seed); seed_set says whether --seed was given.
void add_sampler_options(CLI::App& app, SamplerParams& sp, bool& seed_set);

// A prompt or token file (a pipe such as /dev/stdin too), read up to 256 MiB.
std::string read_prompt_file(const std::string& path);

// Whitespace-separated token ids (a --tokens-file): each in [0, 2^31), at least one.
// `what` names the source in errors.
std::vector<int32_t> parse_token_ids(std::string_view text, const std::string& what);

// Each subcommand registers its options on `app` and returns the function to run it.
using Runner = std::function<int()>;
Runner add_devices(CLI::App& app, const Globals& g);
Runner add_selftest(CLI::App& app, const Globals& g);
Runner add_run(CLI::App& app, const Globals& g);
Runner add_pack(CLI::App& app, const Globals& g);  // tools/cmd_pack.cpp
Runner add_chat(CLI::App& app, const Globals& g);  // tools/cmd_chat.cpp
Runner add_tokenize(CLI::App& app, const Globals& g);
Runner add_synth(CLI::App& app, const Globals& g);
Runner add_convert(CLI::App& app, const Globals& g);
Runner add_profile(CLI::App& app, const Globals& g);     // tools/cmd_profile.cpp
Runner add_eval(CLI::App& app, const Globals& g);        // tools/cmd_eval.cpp
Runner add_perplexity(CLI::App& app, const Globals& g);  // tools/cmd_eval.cpp
Runner add_serve(CLI::App& app, const Globals& g);       // tools/cmd_serve.cpp

// The whole command line: the global options and every subcommand.
class Cli {
 public:
  Cli();
  Cli(const Cli&) = delete;
  Cli& operator=(const Cli&) = delete;
  // Parses the arguments and runs the chosen subcommand; returns the exit code. Errors are
  // one line on stderr ("snapvk: error: ...") and a non-zero code.
  int main(int argc, const char* const* argv);
  Globals& globals() { return g_; }

 private:
  CLI::App app_;
  Globals g_;
  bool verbose_ = false;
  std::string log_level_;
  std::vector<std::pair<CLI::App*, Runner>> commands_;
};

}  // namespace snapvk::cli
