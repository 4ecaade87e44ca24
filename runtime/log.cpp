#include "runtime/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

namespace snapvk {

namespace {

std::mutex g_mutex;
std::atomic<spdlog::logger*> g_logger{nullptr};

// Every logger ever set, never destroyed: log() hands out plain references, and messages
// logged from static destructors at exit must still find theirs.
std::vector<std::shared_ptr<spdlog::logger>>& kept() {
  static auto* v = new std::vector<std::shared_ptr<spdlog::logger>>;
  return *v;
}

std::shared_ptr<spdlog::logger> make_default() {
  auto l = std::make_shared<spdlog::logger>("snapvk", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  l->set_pattern("[snapvk %l] %v");
  l->set_level(default_log_level());
  return l;
}

// Under g_mutex.
void install(std::shared_ptr<spdlog::logger> l) {
  kept().push_back(l);
  g_logger.store(l.get(), std::memory_order_release);
}

}  // namespace

spdlog::level::level_enum default_log_level() {
  if (const char* env = std::getenv("SNAPVK_LOG_LEVEL"); env && *env) {
    const auto parsed = spdlog::level::from_str(env);  // "off" for a name it does not know
    if (parsed != spdlog::level::off || std::strcmp(env, "off") == 0) return parsed;
  }
  return spdlog::level::warn;
}

spdlog::logger& log() {
  if (spdlog::logger* l = g_logger.load(std::memory_order_acquire)) return *l;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_logger.load(std::memory_order_relaxed)) install(make_default());
  return *g_logger.load(std::memory_order_relaxed);
}

void set_logger(std::shared_ptr<spdlog::logger> logger) {
  std::lock_guard<std::mutex> lock(g_mutex);
  install(logger ? std::move(logger) : make_default());
}

}  // namespace snapvk
