// The sanitizer build's own check (ctest, SNAPVK_SANITIZE only): each mode commits one error
// that ASan, LSan or UBSan must report, so a build or suppression change that silences them
// fails the suite. "leak" leaks while a Vulkan device is open: tools/lsan.supp, which hides the
// driver's allocations, must not hide ours.
#include <climits>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "runtime/context.h"

namespace {
std::vector<int>* volatile g_leaked = nullptr;
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "leak") {
    snapvk::Context ctx{snapvk::ContextOptions{}};
    g_leaked = new std::vector<int>(1000, 1);
    g_leaked = nullptr;
    return 0;
  }
  if (mode == "heap-overflow") {
    std::vector<int> v(10);
    volatile size_t i = 10;
    return v.data()[i];
  }
  if (mode == "signed-overflow") {
    volatile int32_t x = INT32_MAX;
    return int(x + 1 == 0);
  }
  std::fprintf(stderr, "usage: sanitizer_canary leak|heap-overflow|signed-overflow\n");
  return 2;
}
