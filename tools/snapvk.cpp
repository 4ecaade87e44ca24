// snapvk: the command-line tool. Each subcommand is a small function over the public
// runtime/host API; errors are one line on stderr and a non-zero exit.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <string>

#include "host/ops.h"
#include "host/selftest.h"
#include "runtime/context.h"
#include "runtime/error.h"

namespace {

using namespace snapvk;

std::string bytes_str(uint64_t b) {
  char buf[64];
  if (b >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(1ull << 30));
  else if (b >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", double(b) / double(1ull << 20));
  else std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  return buf;
}

int cmd_devices() {
  auto devices = Context::list_devices();
  if (devices.empty()) throw Error("no Vulkan device found: install a GPU driver, or Mesa's lavapipe (apt-get install mesa-vulkan-drivers)");
  for (const auto& d : devices) {
    std::printf("[%u] %s\n", d.index, d.name.c_str());
    std::printf("    type: %s   driver: %s   Vulkan %s\n", d.type_name().c_str(), d.driver.c_str(), d.api_string().c_str());
    std::printf("    subgroup: %u (min %u, max %u%s)   shared memory: %u B   max workgroup: %u\n", d.subgroup_size,
                d.min_subgroup_size, d.max_subgroup_size, d.subgroup_size_control ? ", size control" : "",
                d.max_shared_memory, d.max_workgroup_invocations);
    std::printf("    fp16: %s   int8: %s   16-bit storage: %s   8-bit storage: %s   timestamps: %s\n",
                d.fp16 ? "yes" : "no", d.int8 ? "yes" : "no", d.storage16 ? "yes" : "no", d.storage8 ? "yes" : "no",
                d.timestamps ? "yes" : "no");
    std::printf("    max storage buffer range: %s\n", bytes_str(d.max_storage_buffer_range).c_str());
    for (size_t h = 0; h < d.heaps.size(); ++h)
      std::printf("    heap %zu: %s%s\n", h, bytes_str(d.heaps[h].size).c_str(), d.heaps[h].device_local ? " (device-local)" : "");
  }
  return 0;
}

int cmd_selftest(const std::string& device) {
  Context ctx(ContextOptions{device, false});
  Kernels k(ctx);
  std::printf("kernel self-check on %s\n", ctx.info().name.c_str());
  std::printf("%-18s %-14s %12s %12s %10s\n", "kernel", "shape", "max error", "tolerance", "GPU ms");
  int failed = 0;
  for (const auto& r : run_selftest(ctx, k)) {
    std::printf("%-18s %-14s %12.3g %12.3g %10.3f  %s\n", r.kernel.c_str(), r.shape.c_str(), r.max_error, r.tolerance,
                r.ms, r.pass() ? "ok" : "FAIL");
    failed += !r.pass();
  }
  if (failed) throw Error(std::to_string(failed) + " kernel(s) failed the self-check");
  std::printf("all kernels match their CPU reference\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  auto logger = spdlog::stderr_color_mt("snapvk");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("[%l] %v");
  spdlog::set_level(spdlog::level::warn);

  CLI::App app{"snapvk: Llama-family inference on any Vulkan GPU, with SnapKV KV-cache compression"};
  app.set_version_flag("--version", std::string("snapvk ") + SNAPVK_VERSION);
  app.require_subcommand(1);
  bool verbose = false;
  std::string log_level;
  std::string device;
  app.add_flag("-v,--verbose", verbose, "Log progress (same as --log-level info)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_option("--device", device, "Vulkan device: index or name substring (default: $SNAPVK_DEVICE, then the best)");

  auto* devices = app.add_subcommand("devices", "List Vulkan devices and the features snapvk uses");
  auto* selftest = app.add_subcommand("selftest", "Check every kernel against its CPU reference on the device");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (verbose) spdlog::set_level(spdlog::level::info);
  if (!log_level.empty()) spdlog::set_level(spdlog::level::from_str(log_level));

  try {
    if (*devices) return cmd_devices();
    if (*selftest) return cmd_selftest(device);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "snapvk: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
