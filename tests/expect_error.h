#pragma once
// The check most tests of bad numbers and options make: the call throws a snapvk::Error, and
// its message names the problem.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "runtime/error.h"

namespace snapvk::test {

// `f()` throws snapvk::Error whose message contains `what`.
inline void expect_error(const std::function<void()>& f, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << what << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << "want '" << what << "' in: " << e.what();
  }
}

}  // namespace snapvk::test
