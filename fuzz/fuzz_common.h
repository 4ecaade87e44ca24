#pragma once
// Shared by the libFuzzer targets: where the fixture models are, and how a target reports a
// broken invariant (an abort, which libFuzzer records as a crash with its input).
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace snapvk::fuzz {

// ../shared/models beside the checkout, or $SNAPVK_TEST_MODELS (as the tests find them).
inline std::filesystem::path models_dir() {
  if (const char* env = std::getenv("SNAPVK_TEST_MODELS"); env && *env) return env;
  return std::filesystem::path(SNAPVK_SOURCE_DIR) / ".." / "shared" / "models";
}

[[noreturn]] inline void fail(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "fuzz invariant broken: %s %s\n", what, detail.c_str());
  std::abort();
}

}  // namespace snapvk::fuzz
