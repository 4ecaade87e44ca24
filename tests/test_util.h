#pragma once
// Helpers shared by the tests: where the fixture models live.
#include <cstdlib>
#include <filesystem>
#include <string>

namespace snapvk::test {

// ../shared/models beside the checkout, or $SNAPVK_TEST_MODELS.
inline std::filesystem::path models_dir() {
  if (const char* env = std::getenv("SNAPVK_TEST_MODELS"); env && *env) return env;
  return std::filesystem::path(SNAPVK_SOURCE_DIR) / ".." / "shared" / "models";
}

inline std::string model_path(const std::string& name) { return (models_dir() / name).string(); }

}  // namespace snapvk::test
