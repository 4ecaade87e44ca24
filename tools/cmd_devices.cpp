// snapvk devices / selftest: what the Vulkan devices offer, and whether every kernel is right on one.
#include <cstdio>

#include "host/kernels/ops.h"
#include "host/report/selftest.h"
#include "runtime/context.h"
#include "runtime/error.h"
#include "tools/cli.h"

namespace snapvk::cli {

Runner add_devices(CLI::App&, const Globals& g) {
  return [&g] {
    if (g.check_only) return 0;
    auto devices = Context::list_devices();
    if (devices.empty())
      throw Error(
          ErrorKind::Device,
          "no Vulkan device found: install a GPU driver, or Mesa's lavapipe (apt-get install mesa-vulkan-drivers)");
    for (const auto& d : devices) {
      std::printf("[%u] %s\n", d.index, d.name.c_str());
      std::printf("    type: %s   driver: %s   Vulkan %s\n", d.type_name().c_str(), d.driver.c_str(),
                  d.api_string().c_str());
      std::printf("    subgroup: %u (min %u, max %u%s)   shared memory: %u B   max workgroup: %u\n", d.subgroup_size,
                  d.min_subgroup_size, d.max_subgroup_size, d.subgroup_size_control ? ", size control" : "",
                  d.max_shared_memory, d.max_workgroup_invocations);
      std::printf("    fp16: %s   int8: %s   16-bit storage: %s   8-bit storage: %s   timestamps: %s\n",
                  d.fp16 ? "yes" : "no", d.int8 ? "yes" : "no", d.storage16 ? "yes" : "no", d.storage8 ? "yes" : "no",
                  d.timestamps ? "yes" : "no");
      std::printf("    max storage buffer range: %s\n", bytes_str(d.max_storage_buffer_range).c_str());
      for (size_t h = 0; h < d.heaps.size(); ++h)
        std::printf("    heap %zu: %s%s\n", h, bytes_str(d.heaps[h].size).c_str(),
                    d.heaps[h].device_local ? " (device-local)" : "");
    }
    return 0;
  };
}

Runner add_selftest(CLI::App&, const Globals& g) {
  return [&g] {
    if (g.check_only) return 0;
    Context ctx(context_options(g));
    Kernels k(ctx);
    std::printf("kernel self-check on %s\n", ctx.info().name.c_str());
    std::printf("%-18s %-14s %12s %12s %10s\n", "kernel", "shape", "max error", "tolerance", "GPU ms");
    int failed = 0;
    for (const auto& r : run_selftest(ctx, k)) {
      std::printf("%-18s %-14s %12.3g %12.3g %10.3f  %s\n", r.kernel.c_str(), r.shape.c_str(), r.max_error, r.tolerance,
                  r.ms, r.pass() ? "ok" : "FAIL");
      failed += !r.pass();
    }
    if (failed) throw Error(ErrorKind::Device, std::to_string(failed) + " kernel(s) failed the self-check");
    std::printf("all kernels match their CPU reference\n");
    return 0;
  };
}

}  // namespace snapvk::cli
