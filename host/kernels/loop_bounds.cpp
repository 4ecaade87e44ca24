#include "host/kernels/loop_bounds.h"

#include "runtime/vk_check.h"

namespace snapvk {

KernelLoops& KernelLoops::add(std::string_view what, uint64_t trips, uint64_t executions) {
  SNAPVK_ASSERT(count < loops.size(), std::string(kernel) + ": more loops than KernelLoops holds");
  loops[count++] = {what, trips * executions};
  return *this;
}

uint64_t KernelLoops::total() const {
  uint64_t t = 0;
  for (uint32_t i = 0; i < count; ++i) t += loops[i].iterations;
  return t;
}

bool caps_loop_iterations(const DeviceInfo& info) {
  // llvmpipe is Mesa's only CPU driver with the counter; other CPU implementations are
  // treated alike rather than trusted to run past it.
  return info.type == VK_PHYSICAL_DEVICE_TYPE_CPU;
}

void throw_past_loop_budget(const DeviceInfo& info, const KernelLoops& loops, const std::string& what) {
  throw Error(ErrorKind::InvalidArgument,
              std::string(loops.kernel) + ": " + what + " needs " + std::to_string(loops.total()) +
                  " loop iterations in one shader invocation, too close to the " + std::to_string(kLoopIterationCap) +
                  " at which " + info.name + " ends them");
}

}  // namespace snapvk
