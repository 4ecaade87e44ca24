#pragma once
// Shared pieces of the snapvk CLI: global options and the subcommands' entry points.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

#include "host/session.h"
#include "runtime/context.h"

namespace snapvk::cli {

struct Globals {
  std::string device;              // --device
  uint64_t max_device_memory = 0;  // --max-device-memory
};
ContextOptions context_options(const Globals& g);
// "512M", "1.5GiB", "2G", "1000000": bytes (K/M/G/T are powers of 1024, with or without "iB").
uint64_t parse_bytes(const std::string& s);

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
Runner add_profile(CLI::App& app, const Globals& g);  // tools/cmd_profile.cpp
Runner add_eval(CLI::App& app, const Globals& g);

}  // namespace snapvk::cli
