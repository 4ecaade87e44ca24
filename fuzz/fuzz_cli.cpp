// Fuzzes the snapvk command line: the input is the argument list, NUL-separated, parsed and
// checked by the real CLI (every subcommand and option) in check-only mode, which stops
// before any file, device or output is touched. An input starting with "\x01" is instead a
// --tokens-file's text, for the prompt-token parser. Errors must be snapvk::Error or CLI11's
// parse errors (printed as one line); anything else propagates and is reported as a crash.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_common.h"
#include "runtime/error.h"
#include "tools/cli.h"

using namespace snapvk;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  if (!in.empty() && in[0] == '\x01') {
    try {
      for (int32_t id : cli::parse_token_ids(in.substr(1), "tokens"))
        if (id < 0) fuzz::fail("negative token id");
    } catch (const Error&) {}
    return 0;
  }
  std::vector<std::string> args{"snapvk"};
  size_t start = 0;
  while (start <= in.size() && args.size() < 64) {
    size_t end = in.find('\0', start);
    if (end == std::string_view::npos) end = in.size();
    args.emplace_back(in.substr(start, end - start));
    start = end + 1;
  }
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  cli::Cli cli;
  cli.globals().check_only = true;
  cli.main(int(argv.size()), argv.data());
  return 0;
}
