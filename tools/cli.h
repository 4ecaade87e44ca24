#pragma once
// Shared pieces of the snapvk CLI: global options and the subcommands' entry points.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

#include "host/session.h"

namespace snapvk::cli {

struct Globals {
  std::string device;  // --device
};

std::string bytes_str(uint64_t b);

// The KV-cache options of every command that builds a session (--kv-policy, --kv-budget, ...).
struct KvCliOptions {
  std::string policy = "full", type = "f16", pool = "max", gqa = "mean";
  uint32_t budget = 0, window = 32, kernel = 7;
  float ratio = 0.0f;
};
void add_kv_options(CLI::App& app, KvCliOptions& o);
// Checked conversion into session options (throws snapvk::Error with a one-line message).
void apply_kv_options(const KvCliOptions& o, SessionOptions& out);

// Each subcommand registers its options on `app` and returns the function to run it.
using Runner = std::function<int()>;
Runner add_devices(CLI::App& app, const Globals& g);
Runner add_selftest(CLI::App& app, const Globals& g);
Runner add_run(CLI::App& app, const Globals& g);
Runner add_tokenize(CLI::App& app, const Globals& g);
Runner add_synth(CLI::App& app, const Globals& g);
Runner add_convert(CLI::App& app, const Globals& g);

}  // namespace snapvk::cli
