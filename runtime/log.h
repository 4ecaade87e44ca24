#pragma once
// snapvk's own logger: the runtime and host log through log(), never through spdlog's default
// logger or registry, so an application that uses spdlog itself keeps its own default (and its
// spdlog::set_level does not reach snapvk). The CLI and the C API set it up as they want.
#include <spdlog/logger.h>

#include <memory>

namespace snapvk {

// The current logger, made on first use if none was set: "snapvk", plain stderr, pattern
// "[snapvk %l] %v", level warn unless $SNAPVK_LOG_LEVEL says otherwise
// (trace/debug/info/warn/error/critical/off).
spdlog::logger& log();

// Makes `logger` the one log() returns; null restores a fresh default one. A logger once set
// lives until the process exits, so a reference another thread got from log() stays valid.
void set_logger(std::shared_ptr<spdlog::logger> logger);

// The level of the default logger: $SNAPVK_LOG_LEVEL if it names one, else warn.
spdlog::level::level_enum default_log_level();

}  // namespace snapvk
