// snapvk: the command-line tool (tools/cli_app.cpp); errors are one line on stderr and a
// non-zero exit.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "runtime/log.h"
#include "tools/cli.h"

int main(int argc, char** argv) {
  // snapvk's logger, not spdlog's default: colored "[warn] ..." lines on stderr; -v and
  // --log-level change its level (tools/cli_app.cpp).
  auto logger = std::make_shared<spdlog::logger>("snapvk", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  logger->set_pattern("[%l] %v");
  logger->set_level(spdlog::level::warn);
  snapvk::set_logger(std::move(logger));
  snapvk::cli::Cli cli;
  return cli.main(argc, argv);
}
