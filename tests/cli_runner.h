#pragma once
// Runs the built snapvk CLI as a subprocess for tests: stdout and stderr captured, stdin
// empty (or `input` through a pipe), killed after a timeout.
#include <string>
#include <vector>

namespace snapvk::test {

struct CliResult {
  bool exited = false;  // normal exit (not a signal)
  int code = -1;        // exit status when exited
  int signal = 0;       // the signal that ended it, if any
  bool timed_out = false;
  std::string out, err;
};

// <build>/snapvk, beside the test binary's directory (<build>/tests/snapvk_tests).
std::string cli_path();
CliResult run_cli(const std::vector<std::string>& args, int timeout_s = 60);
// The same with `input` written to its stdin through a pipe (closed after it: end of input).
CliResult run_cli_with_input(const std::vector<std::string>& args, const std::string& input, int timeout_s = 60);

}  // namespace snapvk::test
