// snapvk serve: the OpenAI-compatible HTTP server (host/server). Loads the model once, then
// serves until SIGTERM or SIGINT: it stops accepting, finishes the requests in flight and exits.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <thread>

#include "host/model/model.h"
#include "host/server/http_server.h"
#include "host/server/packs.h"
#include "runtime/error.h"
#include "tools/cli.h"

namespace snapvk::cli {

namespace {

struct ServeOptions {
  std::string model, alias, packs;
  SessionCli session;  // -c, -b, --kv-*: each slot's, and the requests' defaults
  server::ServerOptions server;
  int32_t n_predict = 512;
  bool seed_set = false;
};

// SIGTERM and SIGINT, blocked in every thread (block_signals() runs before the device's and the
// server's threads start, which inherit the mask) and taken by one thread with sigwait.
sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

void block_signals() {
  const sigset_t set = stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

// A thread that waits for SIGTERM or SIGINT and stops the server.
std::thread signal_watcher(server::HttpServer& srv, std::atomic<bool>& done) {
  return std::thread([&srv, &done] {
    const sigset_t set = stop_signals();
    int sig = 0;
    sigwait(&set, &sig);  // serve() sends SIGTERM to this thread when the server ends on its own
    if (done.load()) return;
    std::fprintf(stderr, "snapvk serve: %s: finishing the requests in flight\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    while (!done.load()) {  // until listen() returns (a signal may come before it starts)
      srv.drain();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
}

int serve(ServeOptions& o, const Globals& g) {
  if (!o.packs.empty()) {  // before the model loads: a wrong directory fails fast
    server::PackLibrary::check_dir(o.packs);
    o.server.packs_dir = o.packs;
  }
  const SessionOptions so = session_options(o.session);
  o.server.scheduler.session = so;
  o.server.defaults.kv = so.kv;
  o.server.defaults.kv_types = so.kv_types();
  o.server.defaults.max_tokens = o.n_predict > 0 ? uint32_t(o.n_predict) : kMaxContext;
  if (!o.seed_set) o.server.defaults.sampler.seed = std::random_device{}();
  o.server.defaults.model_id = o.alias.empty() ? std::filesystem::path(o.model).stem().string() : o.alias;
  if (g.check_only) return 0;
  signal(SIGPIPE, SIG_IGN);  // a client that goes away is an error return, not a signal
  block_signals();
  Context ctx(context_options(g));
  Kernels kernels(ctx);
  Model model(kernels, o.model);
  server::HttpServer srv(model, o.server);
  const int port = srv.bind();
  std::atomic<bool> done{false};
  std::thread watcher = signal_watcher(srv, done);
  std::fprintf(stderr, "snapvk serve: %s as '%s' on http://%s:%d/v1 (%u slots, KV policy %s%s%s)\n", o.model.c_str(),
               o.server.defaults.model_id.c_str(), o.server.host.c_str(), port, o.server.scheduler.parallel,
               kv_policy_name(so.kv.policy),
               g.max_device_memory ? (", budget " + bytes_str(g.max_device_memory)).c_str() : "",
               o.packs.empty() ? "" : (", packs from " + o.packs).c_str());
  std::fflush(stderr);
  srv.listen();
  done.store(true);
  pthread_kill(watcher.native_handle(), SIGTERM);  // wakes its sigwait if no signal came
  watcher.join();
  srv.shutdown();
  std::fprintf(stderr, "snapvk serve: stopped\n");
  return 0;
}

}  // namespace

Runner add_serve(CLI::App& app, const Globals& g) {
  auto o = std::make_shared<ServeOptions>();
  server::ServerOptions& s = o->server;
  app.add_option("-m,--model", o->model, "GGUF model file")->required();
  app.add_option("--alias", o->alias, "Model name the API lists and requests give (default: the file's stem)");
  app.add_option("--host", s.host, "Address to listen on")->capture_default_str();
  app.add_option("--port", s.port, "Port (0: any free one)")->capture_default_str()->check(CLI::Range(0, 65535));
  app.add_option("--parallel,--np", s.scheduler.parallel, "Slots: requests generating at once")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1024u));
  app.add_option("--queue", s.scheduler.queue_size, "Requests that may wait for a slot or memory (more get 503)")
      ->capture_default_str()
      ->check(CLI::Range(0u, 100000u));
  app.add_option("--queue-timeout", s.scheduler.queue_timeout_s, "Seconds a request may wait before a 503")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 86400.0));
  app.add_option("--decode-batch", s.scheduler.decode_batch,
                 "Sequences one batched decode pass takes at most (0 or 1: each slot decodes alone)")
      ->capture_default_str()
      ->check(CLI::Range(0u, 1024u));
  app.add_option("--api-key", s.api_key, "Require Authorization: Bearer KEY on every request");
  app.add_option("--max-body", s.max_body_bytes, "Largest request body in bytes (more: 413)")
      ->capture_default_str()
      ->check(CLI::Range(size_t(1), size_t(1) << 32));
  app.add_option("--chat-template", s.chat_template, "Chat template instead of the model's: chatml, llama3, ...");
  app.add_option("--packs", o->packs,
                 "Directory of knowledge packs (snapvk pack, *.svkv): a request's \"pack\" names one by its file stem");
  app.add_option("--packs-cache", s.packs_cache_bytes,
                 "Bytes of packs kept read in memory (least recently used let go first)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t(1), uint64_t(1) << 50));
  app.add_option("-n,--n-predict", o->n_predict,
                 "Tokens per answer when a request gives no max_tokens (<= 0: until the context is full)")
      ->capture_default_str();
  add_sampler_options(app, s.defaults.sampler, o->seed_set);
  add_session_options(app, o->session);
  return [o, &g] { return serve(*o, g); };
}

}  // namespace snapvk::cli
