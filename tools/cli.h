#pragma once
// Shared pieces of the snapvk CLI: global options and the subcommands' entry points.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

namespace snapvk::cli {

struct Globals {
  std::string device;  // --device
};

std::string bytes_str(uint64_t b);

// Each subcommand registers its options on `app` and returns the function to run it.
using Runner = std::function<int()>;
Runner add_devices(CLI::App& app, const Globals& g);
Runner add_selftest(CLI::App& app, const Globals& g);
Runner add_run(CLI::App& app, const Globals& g);
Runner add_tokenize(CLI::App& app, const Globals& g);

}  // namespace snapvk::cli
