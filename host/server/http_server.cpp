#include "host/server/http_server.h"

#include <httplib.h>

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>

#include <ctime>
#include <filesystem>
#include <sstream>
#include <thread>

#include "runtime/log.h"
#include "runtime/memory.h"

namespace snapvk::server {

namespace {

constexpr auto kPoll = std::chrono::milliseconds(250);        // a stream's wait for new text
constexpr int kListenBacklog = 1024;                          // connections waiting to be accepted
constexpr auto kKeepAlive = std::chrono::milliseconds(1000);  // a comment line while nothing comes: finds a gone client

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(error_json(e).dump(), "application/json");
}

// The status and error of a snapvk::Error, by its kind (never by its text).
ApiError api_error_by_kind(ErrorKind kind, const std::string& message, Param param) {
  switch (kind) {
    case ErrorKind::InvalidArgument: return ApiError(400, message, param_name(param), "invalid_value");
    case ErrorKind::OutOfMemory: return ApiError(503, message, "", "out_of_memory");
    case ErrorKind::Cancelled: return ApiError(499, message, "", "cancelled");
    case ErrorKind::Io:
    case ErrorKind::BadModel:
    case ErrorKind::Device:
    case ErrorKind::Internal: break;
  }
  return ApiError(500, message, "", error_kind_name(kind));
}

ApiError api_error_from(const Error& e) { return api_error_by_kind(e.kind(), e.what(), e.param()); }

// The status and error of a job the scheduler refused or that failed; `r` names the prompt's field.
ApiError api_error_from(const JobError& e, const GenerationRequest& r) {
  const char* prompt = r.chat ? "messages" : "prompt";
  switch (e.failure) {
    case JobFailure::EmptyPrompt: return ApiError(400, e.what(), prompt);
    case JobFailure::BadToken: return ApiError(400, e.what(), prompt, "invalid_value");
    case JobFailure::PromptTooLong: return ApiError(400, e.what(), prompt, "context_length_exceeded");
    case JobFailure::OverBudget: return ApiError(503, e.what(), "", "out_of_memory");
    case JobFailure::QueueFull: return ApiError(503, e.what(), "", "queue_full");
    case JobFailure::ShuttingDown: return ApiError(503, e.what(), "", "shutting_down");
    case JobFailure::Cancelled: return ApiError(499, e.what(), "", "cancelled");
    case JobFailure::Session: return api_error_by_kind(e.kind, e.what(), e.param);
    case JobFailure::Internal: break;
  }
  return ApiError(500, e.what(), "", "internal_error");
}

bool write_event(httplib::DataSink& sink, const std::string& data) {
  const std::string event = "data: " + data + "\n\n";
  return sink.write(event.data(), event.size());
}

ChatTemplate template_for(const Model& m, const std::string& name) {
  return ChatTemplate::for_model(m.gguf(), m.tokenizer(), name);
}

}  // namespace

// One streamed response: what the event-stream provider keeps between its calls.
struct HttpServer::StreamState {
  std::vector<std::shared_ptr<Job>> jobs;  // one per choice
  std::vector<bool> first, finished;       // per choice: no chunk sent yet; its last chunk sent
  std::vector<Outcome> outcomes;           // of the choices that finished
  std::string id, model;
  int64_t created = 0;
  bool ended = false;  // [DONE] sent
  Clock::time_point last_write = Clock::now();
};

struct HttpServer::Impl {
  httplib::Server http;
  int listen_fd = -1;  // the listening socket (httplib gives it a backlog of 5)
  std::atomic<bool> listener_closed{false};  // drain() shut it down
  std::atomic<uint64_t> next_id{1};
};

HttpServer::HttpServer(const Model& model, const ServerOptions& o)
    : model_(model),
      o_(o),
      tmpl_(template_for(model, o.chat_template)),
      scheduler_(std::make_unique<Scheduler>(model, tmpl_, o.scheduler)),
      impl_(std::make_unique<Impl>()) {
  if (!o_.packs_dir.empty()) {
    const SessionOptions& so = scheduler_->options().session;  // n_ctx resolved
    packs_ = std::make_unique<PackLibrary>(model, o_.packs_dir, so.kv_types(), so.n_ctx, so.n_batch,
                                           o_.packs_cache_bytes);
  }
  httplib::Server& http = impl_->http;
  const size_t threads =
      o_.http_threads ? o_.http_threads : size_t(o_.scheduler.parallel) + o_.scheduler.queue_size + 8;
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_payload_max_length(o_.max_body_bytes);
  http.set_socket_options([impl = impl_.get()](socket_t sock) {
    const int yes = 1;  // httplib's default options, which this replaces
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    impl->listen_fd = int(sock);
  });
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (o_.api_key.empty() || req.get_header_value("Authorization") == "Bearer " + o_.api_key)
      return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(401, "a valid API key is required: Authorization: Bearer <key>", "", "invalid_api_key"));
    metrics_.requests[4]++;
    return httplib::Server::HandlerResponse::Handled;
  });
  http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;  // a handler's own error
    std::string msg = res.status == 404 ? "no endpoint " + req.method + " " + req.path
                      : res.status == 413
                          ? "the request body is larger than " + std::to_string(o_.max_body_bytes) + " bytes"
                          : "bad request (HTTP status " + std::to_string(res.status) + ")";
    send_error(res, ApiError(res.status, msg, "", res.status == 413 ? "body_too_large" : ""));
    metrics_.requests[std::min(res.status / 100, 5)]++;
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {}
    send_error(res, ApiError(500, what, "", "internal_error"));
  });
  register_routes();
}

HttpServer::~HttpServer() {
  stop();
  if (scheduler_) scheduler_->stop();
}

int HttpServer::bind() {
  httplib::Server& http = impl_->http;
  port_ = o_.port == 0 ? http.bind_to_any_port(o_.host) : (http.bind_to_port(o_.host, o_.port) ? o_.port : -1);
  if (port_ <= 0)
    throw Error(ErrorKind::Io, "cannot listen on " + o_.host + ":" + std::to_string(o_.port) +
                                   " (in use, or not an address of this machine)");
  // httplib listens with a backlog of 5: a burst of clients connecting at once would find their
  // connections dropped. Listening again on the socket raises it.
  if (impl_->listen_fd >= 0) ::listen(impl_->listen_fd, kListenBacklog);
  return port_;
}

void HttpServer::listen() { impl_->http.listen_after_bind(); }

void HttpServer::stop() {
  stopping_.store(true);
  // After drain() httplib has closed the listening socket itself; its stop() would close that
  // descriptor again (by then maybe another file's).
  if (!impl_->listener_closed.load()) impl_->http.stop();
}

void HttpServer::drain() {
  stopping_.store(true);
  // shutdown() makes httplib's accept() fail at once: it closes the socket and accepts no more
  // (new connections are refused), while the connections it has go on. httplib's stop() would
  // also end the streams in flight.
  if (impl_->listen_fd >= 0 && !impl_->listener_closed.exchange(true)) ::shutdown(impl_->listen_fd, SHUT_RDWR);
  while (inflight_.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

void HttpServer::shutdown() { scheduler_->stop(); }

}  // namespace snapvk::server

// ---- routes ----

namespace snapvk::server {

void HttpServer::count(int status) { metrics_.requests[std::clamp(status / 100, 0, 5)]++; }

void HttpServer::count_outcome(const Outcome& o) {
  metrics_.prompt_tokens += o.prompt_tokens;
  metrics_.completion_tokens += o.completion_tokens;
  metrics_.cached_tokens += o.cached_tokens;
  if (o.ttft_ms > 0) metrics_.ttft_us_sum += uint64_t(o.ttft_ms * 1000), metrics_.ttft_count++;
}

template <class F>
void HttpServer::guarded(void* res_, F&& body) {
  auto& res = *static_cast<httplib::Response*>(res_);
  try {
    body();
    return;
  } catch (const ApiError& e) {
    send_error(res, e);
  } catch (const Error& e) {
    send_error(res, api_error_from(e));
  }
  count(res.status);
}

void HttpServer::register_routes() {
  httplib::Server& http = impl_->http;
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const SchedulerStats st = scheduler_->stats();
    const bool up = !stopping_.load();
    res.status = up ? 200 : 503;
    res.set_content(json{{"status", up ? "ok" : "shutting down"},
                         {"slots_idle", st.slots - st.active},
                         {"slots_processing", st.active},
                         {"queue", st.queued}}
                        .dump(),
                    "application/json");
    count(res.status);
  });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    const ModelConfig& c = model_.config();
    json m = {{"id", o_.defaults.model_id},
              {"object", "model"},
              {"created", int64_t(std::time(nullptr))},
              {"owned_by", "snapvk"},
              {"meta",
               {{"n_ctx", scheduler_->options().session.n_ctx},
                {"n_ctx_train", c.n_ctx_train},
                {"n_vocab", c.n_vocab},
                {"chat_template", tmpl_.name()}}}};
    if (packs_) m["meta"]["packs"] = packs_->names();  // what a request's "pack" may name
    res.set_content(json{{"object", "list"}, {"data", json::array({m})}}.dump(), "application/json");
    count(200);
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(), "text/plain; version=0.0.4");
    count(200);
  });
  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(&res, [&] { generation(&req, &res, true); });
  });
  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(&res, [&] { generation(&req, &res, false); });
  });
}

namespace {

// The socket of the connection `req` came on. httplib (0.11) hands handlers no socket, so it is
// found among this process's descriptors by its two ends; -1 when it cannot be (no /proc). The
// descriptor stays this connection's while its handler runs.
int connection_socket(const httplib::Request& req) {
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const int fd = std::stoi(name);
    sockaddr_storage peer{}, self{};
    socklen_t pl = sizeof peer, sl = sizeof self;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&self), &sl) != 0)
      continue;
    auto end = [](const sockaddr_storage& a, std::string& addr) {
      char buf[INET6_ADDRSTRLEN] = {};
      if (a.ss_family == AF_INET) {
        const auto& v4 = reinterpret_cast<const sockaddr_in&>(a);
        inet_ntop(AF_INET, &v4.sin_addr, buf, sizeof buf);
        addr = buf;
        return int(ntohs(v4.sin_port));
      }
      if (a.ss_family == AF_INET6) {
        const auto& v6 = reinterpret_cast<const sockaddr_in6&>(a);
        inet_ntop(AF_INET6, &v6.sin6_addr, buf, sizeof buf);
        addr = buf;
        return int(ntohs(v6.sin6_port));
      }
      return -1;
    };
    std::string peer_addr, self_addr;
    if (end(peer, peer_addr) == req.remote_port && peer_addr == req.remote_addr &&
        end(self, self_addr) == req.local_port && self_addr == req.local_addr)
      return fd;
  }
  return -1;
}

// Whether the client closed the connection: it is readable and reading would give its end (a
// pipelined next request is data, not an end).
bool client_gone(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLERR | POLLNVAL)) return true;
  char c;
  const ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

}  // namespace

void HttpServer::generation(const void* req_, void* res_, bool chat) {
  const auto& http_req = *static_cast<const httplib::Request*>(req_);
  auto& res = *static_cast<httplib::Response*>(res_);
  // Counted before the check, so that drain() either sees this request or it sees stopping_.
  struct InFlight {
    std::atomic<int>& n;
    bool handed_over = false;  // a stream ends later, in its releaser
    ~InFlight() {
      if (!handed_over) n--;
    }
  };
  ++inflight_;
  InFlight inflight{inflight_};
  if (stopping_.load()) throw ApiError(503, "the server is shutting down", "", "shutting_down");
  GenerationRequest r = chat ? parse_chat_request(http_req.body, o_.defaults)
                             : parse_completion_request(http_req.body, o_.defaults);
  std::shared_ptr<const ServedPack> pack;
  if (!r.pack.empty()) {
    if (!packs_) throw ApiError(400, "this server has no packs (start it with --packs DIR)", "pack", "packs_disabled");
    // The pack's cache was made with its policy; a request cannot give it another.
    if (!r.kv_field.empty())
      throw ApiError(400, r.kv_field + " does not go with pack: a pack keeps the KV policy and type it was made with",
                     r.kv_field, "invalid_value");
    pack = packs_->get(r.pack);
    r.kv = pack->pack.policy;
    r.kv_types = pack->pack.kv_types;
  }
  // One job per choice; any that fails or a client that leaves ends them all.
  struct Jobs {
    Scheduler& sch;
    std::vector<std::shared_ptr<Job>> list;
    bool handed_over = false;
    ~Jobs() {
      if (!handed_over)
        for (auto& j : list) sch.cancel(j);  // a job that ended already is not touched
    }
  } jobs{*scheduler_};
  for (GenerationRequest& c : choices(r)) {
    auto job = std::make_shared<Job>();
    job->req = std::move(c);
    job->pack = pack;
    try {
      scheduler_->submit(job);
    } catch (const JobError& e) {
      throw api_error_from(e, job->req);
    }
    jobs.list.push_back(job);
  }
  const int fd = connection_socket(http_req);
  auto gone = [&] {
    if (!client_gone(fd)) return false;
    metrics_.cancelled++;
    return true;  // Jobs cancels them; nobody reads the response
  };
  const auto timeout = std::chrono::milliseconds(int64_t(o_.scheduler.queue_timeout_s * 1000));
  for (auto& job : jobs.list)
    for (const auto t0 = Clock::now(); !job->wait_started(kPoll);) {
      if (gone()) return;
      if (Clock::now() - t0 >= timeout && scheduler_->withdraw(job))
        throw ApiError(503,
                       "no slot or device memory came free within " +
                           std::to_string(int(o_.scheduler.queue_timeout_s)) + " s",
                       "", "queue_timeout");
    }
  if (r.stream) {
    // A failure before the first token (the prompt did not fit, a device error) keeps its status.
    for (auto& job : jobs.list)
      if (job->state() == Job::State::Done && job->error()) throw api_error_from(*job->error(), job->req);
    stream(jobs.list, &res);
    jobs.handed_over = inflight.handed_over = true;
    count(200);
    return;
  }
  std::vector<Outcome> outcomes;
  for (auto& job : jobs.list) {
    while (!job->wait_done(kPoll))
      if (gone()) return;
    if (auto e = job->error()) throw api_error_from(*e, job->req);
    outcomes.push_back(job->outcome());
    count_outcome(outcomes.back());
  }
  jobs.handed_over = true;
  const std::string id = std::string(chat ? "chatcmpl-" : "cmpl-") + std::to_string(impl_->next_id++);
  res.set_content(completion_response(r, outcomes, id, o_.defaults.model_id, std::time(nullptr)).dump(),
                  "application/json");
  count(200);
}

void HttpServer::stream(const std::vector<std::shared_ptr<Job>>& jobs, void* res_) {
  auto& res = *static_cast<httplib::Response*>(res_);
  auto st = std::make_shared<StreamState>();
  st->jobs = jobs;
  st->first.assign(jobs.size(), true);
  st->finished.assign(jobs.size(), false);
  st->id = std::string(jobs[0]->req.chat ? "chatcmpl-" : "cmpl-") + std::to_string(impl_->next_id++);
  st->model = o_.defaults.model_id;
  st->created = std::time(nullptr);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream", [this, st](size_t, httplib::DataSink& sink) { return stream_step(*st, &sink); },
      [this, st](bool success) {
        if (!success || !st->ended) {
          for (auto& job : st->jobs) scheduler_->cancel(job);
          metrics_.cancelled++;
        }
        inflight_--;
      });
}

// One call of a stream's provider: the text each choice has ready, a choice's last chunk when it
// ends, and after the last one the usage and [DONE]. False: the client is gone.
bool HttpServer::stream_step(StreamState& st, void* sink_) {
  auto& sink = *static_cast<httplib::DataSink*>(sink_);
  const size_t n = st.jobs.size();
  const auto wait = std::max(std::chrono::milliseconds(10), kPoll / int(n));
  bool ok = true, wrote = false;
  for (size_t i = 0; i < n && ok; ++i) {
    if (st.finished[i]) continue;
    Job& job = *st.jobs[i];
    const GenerationRequest& r = job.req;
    std::string text;
    const bool done = job.next(text, wait);
    if (!text.empty()) {
      ok = write_event(sink, stream_chunk(r, st.id, st.model, st.created, text, std::nullopt, st.first[i]).dump());
      st.first[i] = false, wrote = true;
    }
    if (!ok || !done) continue;
    st.finished[i] = true;
    if (auto e = job.error()) {  // the stream ends with the error: the other choices are cancelled
      write_event(sink, error_json(api_error_from(*e, r)).dump());
      for (auto& other : st.jobs) scheduler_->cancel(other);
      std::fill(st.finished.begin(), st.finished.end(), true);
      st.outcomes.clear();
      break;
    }
    const Outcome o = job.outcome();
    count_outcome(o);
    json last = stream_chunk(r, st.id, st.model, st.created, "", o.finish_reason, st.first[i]);
    last["snapvk"] = snapvk_json(o);
    ok = write_event(sink, last.dump());
    st.outcomes.push_back(o);
    wrote = true;
  }
  if (!ok) return false;  // the releaser cancels the jobs
  if (wrote) {
    st.last_write = Clock::now();
  } else if (Clock::now() - st.last_write > kKeepAlive) {
    if (!sink.write(": keep-alive\n\n", 14)) return false;
    st.last_write = Clock::now();
  }
  if (std::find(st.finished.begin(), st.finished.end(), false) != st.finished.end()) return true;
  const GenerationRequest& r = st.jobs[0]->req;
  if (r.include_usage && st.outcomes.size() == n) {
    json u = stream_chunk(r, st.id, st.model, st.created, "", std::nullopt, false);
    u["choices"] = json::array();
    u["usage"] = usage_json(st.outcomes);
    write_event(sink, u.dump());
  }
  write_event(sink, "[DONE]");
  st.ended = true;
  sink.done();
  return true;
}

std::string HttpServer::metrics_text() {
  const SchedulerStats st = scheduler_->stats();
  std::ostringstream out;
  auto metric = [&](const char* name, const char* type, const char* help, auto value) {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n'
        << name << ' ' << value << '\n';
  };
  out << "# HELP snapvk_requests_total HTTP requests answered, by status class\n# TYPE snapvk_requests_total counter\n";
  for (int c : {2, 4, 5}) out << "snapvk_requests_total{status=\"" << c << "xx\"} " << metrics_.requests[c] << '\n';
  metric("snapvk_requests_cancelled_total", "counter", "Requests whose client went away before the answer",
         metrics_.cancelled.load());
  metric("snapvk_prompt_tokens_total", "counter", "Prompt tokens of answered requests", metrics_.prompt_tokens.load());
  metric("snapvk_prompt_tokens_cached_total", "counter", "Prompt tokens a slot's cache held already (not prefilled)",
         metrics_.cached_tokens.load());
  metric("snapvk_completion_tokens_total", "counter", "Generated tokens", metrics_.completion_tokens.load());
  metric("snapvk_time_to_first_token_seconds_sum", "counter", "Arrival to first token, summed",
         double(metrics_.ttft_us_sum.load()) / 1e6);
  metric("snapvk_time_to_first_token_seconds_count", "counter", "Requests in the sum", metrics_.ttft_count.load());
  metric("snapvk_kv_bytes_in_use", "gauge", "KV bytes the sessions hold for their tokens", st.kv_bytes);
  metric("snapvk_kv_bytes_full_equivalent", "gauge", "What full caches would need for the same tokens",
         st.kv_bytes_full);
  metric("snapvk_kv_bytes_allocated", "gauge", "Device bytes of the sessions' KV buffers", st.kv_bytes_allocated);
  metric("snapvk_memory_reserved_bytes", "gauge", "Device bytes the memory model counts for the slots",
         st.reserved_bytes);
  metric("snapvk_memory_available_bytes", "gauge", "Device bytes for sessions (budget less weights; 0: no budget)",
         st.available_bytes);
  metric("snapvk_device_memory_used_bytes", "gauge", "Device bytes allocated", model_.ctx().memory().current());
  metric("snapvk_decode_steps_total", "counter", "Batched decode passes", st.decode_steps);
  metric("snapvk_decode_sequences_total", "counter", "Tokens decoded in batched passes", st.decode_sequences);
  metric("snapvk_slots", "gauge", "Slots (--parallel)", st.slots);
  metric("snapvk_slots_processing", "gauge", "Slots running a request", st.active);
  metric("snapvk_sessions", "gauge", "Sessions held (running or kept for their conversation)", st.sessions);
  metric("snapvk_queue_length", "gauge", "Requests waiting for a slot or memory", st.queued);
  // What routers and autoscalers read, under the names they look for (vLLM's and llama-server's
  // "requests running/waiting", KV bytes used and left).
  metric("snapvk_requests_running", "gauge", "Requests generating now (one per choice)", st.active);
  metric("snapvk_requests_waiting", "gauge", "Requests queued for a slot or memory", st.queued);
  // Used and available as admission counts them (set when a request is admitted, so a prefill
  // under way counts already): the sessions' caches and activations, and what the budget leaves.
  metric("snapvk_kv_cache_used_bytes", "gauge", "Device bytes admission counts for the sessions (caches, activations)",
         st.reserved_bytes);
  if (st.available_bytes)  // with --max-device-memory: what admission may still give new sessions
    metric("snapvk_kv_cache_available_bytes", "gauge", "Device bytes the budget leaves for more sessions",
           st.available_bytes > st.reserved_bytes ? st.available_bytes - st.reserved_bytes : 0);
  metric("snapvk_draining", "gauge", "1 once SIGTERM came: no new connections, the requests in flight finish",
         stopping_.load() ? 1 : 0);
  if (packs_) {
    const PackLibrary::Stats ps = packs_->stats();
    metric("snapvk_packs_cached", "gauge", "Knowledge packs kept read in memory", ps.packs);
    metric("snapvk_packs_cached_bytes", "gauge", "Bytes of the packs kept in memory (their files)", ps.bytes);
    metric("snapvk_pack_loads_total", "counter", "Pack files read and checked", ps.loads);
    metric("snapvk_pack_evictions_total", "counter", "Packs let go, least recently used first, for room",
           ps.evictions);
  }
  return out.str();
}

}  // namespace snapvk::server
