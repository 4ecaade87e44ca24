// The snapvk command line: global options, the subcommands (tools/cmd_*.cpp, each a small
// function over the runtime/host API) and the shared option parsers.
#include <spdlog/spdlog.h>

#include <charconv>
#include <cstdio>
#include <vector>

#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/memory.h"
#include "tools/cli.h"

namespace snapvk::cli {

std::string bytes_str(uint64_t b) { return format_bytes(b); }

ContextOptions context_options(const Globals& g) {
  ContextOptions o;
  o.device = g.device;
  o.memory_budget = g.max_device_memory;
  return o;
}

namespace {

// The command-line option that sets a session option (the option table's long flag).
std::string option_name(Param p) {
  const OptionInfo* o = p ? find_option(p.name) : nullptr;
  return o ? std::string(o->long_flag()) : std::string();
}

// Whether the command that ran (or its chosen subcommand) has the option `name`.
bool has_option(const CLI::App& app, const std::string& name) {
  if (app.get_option_no_throw(name)) return true;
  for (const CLI::App* sub : app.get_subcommands())
    if (has_option(*sub, name)) return true;
  return false;
}

}  // namespace

Cli::Cli() : app_("snapvk: Llama-family inference on any Vulkan GPU, with SnapKV KV-cache compression") {
  app_.set_version_flag("--version", std::string("snapvk ") + SNAPVK_VERSION);
  app_.require_subcommand(1);
  app_.add_flag("-v,--verbose", verbose_, "Log progress (same as --log-level info)");
  app_.add_option("--log-level", log_level_, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app_.add_option("--device", g_.device,
                  "Vulkan device: index or name substring (default: $SNAPVK_DEVICE, then the best)");
  // CLI11 reads the size: K, M, G, T, P, E with or without "iB" (all powers of 1024), whole
  // numbers only. What it lets through is a byte count that must still be a plain decimal in
  // [1, 2^64): 0 would mean "no budget", and CLI11 would take "-1" or 2^64 and more as 2^64 - 1,
  // and "010" as octal.
  app_.add_option(
          "--max-device-memory", g_.max_device_memory,
          "Keep device allocations within this many bytes (e.g. 256M, 2G, 2GiB); refuse up front what cannot fit")
      ->transform(CLI::AsSizeValue(false))
      ->check(
          [](const std::string& v) {
            uint64_t n = 0;
            const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
            if (ec == std::errc() && end == v.data() + v.size() && n >= 1 && v[0] != '0') return std::string();
            return "'" + v + "' is not a size from 1 byte to 2^64 - 1 bytes (examples: 256M, 2G, 2GiB, 1000000)";
          },
          "", "SIZE");

  auto add = [&](const char* name, const char* help, Runner (*reg)(CLI::App&, const Globals&)) {
    CLI::App* sub = app_.add_subcommand(name, help);
    sub->fallthrough();  // global options (--device, --max-device-memory, -v) also work after the subcommand
    commands_.emplace_back(sub, reg(*sub, g_));
  };
  add("devices", "List Vulkan devices and the features snapvk uses", add_devices);
  add("selftest", "Check every kernel against its CPU reference on the device", add_selftest);
  add("run", "Generate text from a GGUF model", add_run);
  add("pack", "Prefill (and compress) a document once and save its KV cache as a pack for run/chat --pack", add_pack);
  add("chat", "Chat with an instruct model in the terminal (the model's chat template; stdin may be a pipe)", add_chat);
  add("tokenize", "Print the token ids of a text", add_tokenize);
  add("synth", "Write a synthetic model (random weights) of a given shape as GGUF", add_synth);
  add("convert", "Re-quantize the weight matrices of a GGUF model", add_convert);
  add("profile", "Memory savings, speed and fidelity of KV policies per context length (table, CSV, JSON, SVG, HTML)",
      add_profile);
  add("eval",
      "Fidelity of KV policies on a model: needle, needle-word, needle-phrase, multi-needle, passkey, docqa, or the "
      "whole suite",
      add_eval);
  add("perplexity", "Perplexity over a text in chunks, per KV policy (each chunk's second half after its first)",
      add_perplexity);
  add("serve", "OpenAI-compatible HTTP server: many conversations in one device budget (docs/server.md)", add_serve);
}

int Cli::main(int argc, const char* const* argv) {
  // llama.cpp's -ctk / -ctv: CLI11 takes one character after a single dash
  std::vector<const char*> args(argv, argv + argc);
  for (const char*& a : args)
    if (std::string_view(a) == "-ctk")
      a = "--cache-type-k";
    else if (std::string_view(a) == "-ctv")
      a = "--cache-type-v";
  try {
    app_.parse(argc, args.data());
  } catch (const CLI::ParseError& e) {
    // --help and --version arrive as "errors" with exit code 0: CLI11 prints those.
    if (e.get_exit_code() == 0) return app_.exit(e);
    std::fprintf(stderr, "snapvk: error: %s (see --help)\n", e.what());
    return e.get_exit_code();
  }
  if (verbose_) log().set_level(spdlog::level::info);
  if (!log_level_.empty()) log().set_level(spdlog::level::from_str(log_level_));

  const CLI::App* ran = nullptr;
  try {
    for (auto& [sub, run] : commands_)
      if (*sub) {
        ran = sub;
        return run();
      }
  } catch (const Error& e) {
    // An option's error names the flag that sets it, where this command has one (profile sets
    // each run's context from --contexts, not --ctx-size).
    const std::string flag = option_name(e.param());
    if (!flag.empty() && ran && has_option(*ran, flag))
      std::fprintf(stderr, "snapvk: error: %s (option %s)\n", e.what(), flag.c_str());
    else
      std::fprintf(stderr, "snapvk: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    if (g_.check_only) throw;
    std::fprintf(stderr, "snapvk: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace snapvk::cli
