#pragma once
// A quick check of every kernel against its CPU reference on the chosen device: what a user
// runs first on a new GPU/driver (`snapvk selftest`). The full suite lives in tests/.
#include <string>
#include <vector>

#include "host/kernels/ops.h"

namespace snapvk {

struct SelfTestResult {
  std::string kernel;
  std::string shape;
  double max_error = 0;
  double tolerance = 0;
  double ms = 0;  // GPU time of the dispatch
  bool pass() const { return max_error <= tolerance; }
};

std::vector<SelfTestResult> run_selftest(Context& ctx, const Kernels& k);

}  // namespace snapvk
