// snapvk: the command-line tool (tools/cli_app.cpp); errors are one line on stderr and a
// non-zero exit.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "tools/cli.h"

int main(int argc, char** argv) {
  auto logger = spdlog::stderr_color_mt("snapvk");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("[%l] %v");
  spdlog::set_level(spdlog::level::warn);
  snapvk::cli::Cli cli;
  return cli.main(argc, argv);
}
