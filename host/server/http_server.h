#pragma once
// `snapvk serve`'s HTTP side (cpp-httplib): the OpenAI-compatible endpoints, server-sent events,
// authentication, body limits and Prometheus metrics over a Scheduler. httplib stays inside
// http_server.cpp.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "host/model/chat_template.h"
#include "host/model/model.h"
#include "host/server/openai.h"
#include "host/server/packs.h"
#include "host/server/scheduler.h"

namespace snapvk::server {

struct ServerOptions {
  std::string host = "127.0.0.1";    // loopback unless told otherwise
  int port = 8080;                   // 0: any free port (port() says which)
  std::string api_key;               // non-empty: every request needs "Authorization: Bearer <key>"
  size_t max_body_bytes = 8u << 20;  // larger request bodies get 413
  uint32_t http_threads = 0;         // 0: slots + queue + 8 (a waiting request holds a thread)
  std::string chat_template;         // a template name instead of the model's (empty: the model's)
  std::string packs_dir;             // --packs: the knowledge packs requests may name (empty: none)
  uint64_t packs_cache_bytes = PackLibrary::kDefaultMaxBytes;  // --packs-cache: packs kept read in memory
  SchedulerOptions scheduler;
  RequestDefaults defaults;  // defaults.model_id: the name /v1/models lists
};

// Counters for /metrics.
struct ServerMetrics {
  std::atomic<uint64_t> requests[6] = {};  // by status class: [2] 2xx, [4] 4xx, [5] 5xx
  std::atomic<uint64_t> prompt_tokens{0}, completion_tokens{0}, cached_tokens{0};
  std::atomic<uint64_t> ttft_us_sum{0}, ttft_count{0}, cancelled{0};
};

class HttpServer {
 public:
  HttpServer(const Model& model, const ServerOptions& o);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the listening socket; returns the port. Throws snapvk::Error (Io) when it cannot.
  int bind();
  // Serves until stop(); then the requests in flight have been answered.
  void listen();
  // Graceful stop: stops listening at once (new connections are refused; a request on a
  // connection kept alive gets 503) and returns when the requests in flight (streams included)
  // have been answered; listen() returns once the open connections have closed. Any thread.
  void drain();
  // Stops listening now (httplib ends the streams still running; after drain(), nothing more).
  // Any thread.
  void stop();
  // After listen() returned: lets queued and running jobs end and the slot threads exit.
  void shutdown();
  int port() const { return port_; }
  const ServerMetrics& metrics() const { return metrics_; }
  std::string metrics_text();

 private:
  struct Impl;
  void register_routes();
  // Runs a handler body: an ApiError or snapvk::Error becomes its OpenAI error response.
  template <class F>
  void guarded(void* res, F&& body);
  struct StreamState;
  void generation(const void* req, void* res, bool chat);
  void stream(const std::vector<std::shared_ptr<Job>>& jobs, void* res);
  bool stream_step(StreamState& st, void* sink);
  void count(int status);
  void count_outcome(const Outcome& o);

  const Model& model_;
  ServerOptions o_;
  ChatTemplate tmpl_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<PackLibrary> packs_;  // null without packs_dir
  std::unique_ptr<Impl> impl_;
  ServerMetrics metrics_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> inflight_{0};  // generation requests not yet answered (a stream: until its end)
};

}  // namespace snapvk::server
