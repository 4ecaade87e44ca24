#pragma once
// Shared by the libFuzzer targets: where the fixture models are (as the tests find them), and
// how a target reports a broken invariant (an abort, which libFuzzer records as a crash).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/test_util.h"

namespace snapvk::fuzz {

using test::models_dir;

[[noreturn]] inline void fail(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "fuzz invariant broken: %s %s\n", what, detail.c_str());
  std::abort();
}

}  // namespace snapvk::fuzz
