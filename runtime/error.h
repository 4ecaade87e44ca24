#pragma once
// One exception type for every failure the user can cause or the device can report.
// Its message is a single line that names the problem; the CLI prints it and exits non-zero.
#include <stdexcept>
#include <string>

namespace snapvk {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace snapvk
