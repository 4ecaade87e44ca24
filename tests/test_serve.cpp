// `snapvk serve` over real HTTP on a free loopback port (cpp-httplib's client): the endpoints,
// streamed and not, against the generation loop run directly; conversations that continue from
// a slot's cache; admission by the memory model and the bounded queue; bad requests; a client
// that disconnects mid-stream; 200 concurrent requests with bad ones among them; SIGTERM;
// knowledge packs (--packs) against a session that loads the same pack directly.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <chrono>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "host/kv/kv_cache.h"
#include "host/pack/pack.h"
#include "host/server/http_server.h"
#include "host/server/stop_text.h"
#include "host/session/generate.h"
#include "host/session/memory_model.h"
#include "tests/greedy.h"
#include "tests/cli_runner.h"
#include "tests/test_util.h"

extern char** environ;

namespace snapvk::test {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

const std::string kStories = "stories260K.gguf";

// A server on its own device context, listening on a free loopback port in a thread.
struct TestServer {
  // spare: device bytes the sessions may use beyond the weights, from the model (none: no budget).
  explicit TestServer(const std::string& model_file, server::ServerOptions o = {},
                      std::function<uint64_t(const Model&)> spare = {})
      : ctx(ContextOptions{}), kernels(ctx), model(kernels, model_path(model_file)) {
    o.port = 0;
    if (o.defaults.model_id.empty()) o.defaults.model_id = "test-model";
    o.defaults.sampler.temp = 0;  // greedy unless a request says otherwise
    if (spare) ctx.memory().set_budget(ctx.memory().current() + spare(model));
    srv = std::make_unique<server::HttpServer>(model, o);
    port = srv->bind();
    thread = std::thread([this] { srv->listen(); });
  }
  ~TestServer() {
    srv->drain();
    thread.join();
    srv->shutdown();
    EXPECT_EQ(ctx.validation_errors(), 0u) << ctx.last_validation_message();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(300s);
    c.set_write_timeout(60s);
    return c;
  }
  json post(const std::string& path, const json& body, int expect_status = 200) const {
    auto res = client().Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(res) << "no response from " << path;
    if (!res) return {};
    EXPECT_EQ(res->status, expect_status) << res->body;
    return json::parse(res->body, nullptr, false);
  }
  // A streamed request: the data: payloads in order ("[DONE]" included).
  std::vector<std::string> stream(const std::string& path, const json& body) const {
    auto res = client().Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(res && res->status == 200) << (res ? res->body : "no response");
    std::vector<std::string> events;
    if (!res) return events;
    std::istringstream in(res->body);
    for (std::string line; std::getline(in, line);)
      if (line.rfind("data: ", 0) == 0) events.push_back(line.substr(6));
    return events;
  }
  std::string metric(const std::string& name) const {
    auto res = client().Get("/metrics");
    std::smatch m;
    const std::regex re("\n" + name + " ([0-9.e+]+)\n");
    return res && std::regex_search(res->body, m, re) ? m[1].str() : "";
  }

  Context ctx;
  Kernels kernels;
  Model model;
  std::unique_ptr<server::HttpServer> srv;
  int port = 0;
  std::thread thread;
};


// Concatenated stream text and the chunk objects.
std::string stream_text(const std::vector<std::string>& events, bool chat, json* last = nullptr) {
  std::string text;
  for (const std::string& e : events) {
    if (e == "[DONE]") break;
    const json j = json::parse(e);
    if (j["choices"].empty()) continue;
    const json& c = j["choices"][0];
    text += chat ? c["delta"].value("content", "") : c["text"].get<std::string>();
    if (last && !c["finish_reason"].is_null()) *last = j;
  }
  return text;
}

TEST(Serve, EndpointsHealthModelsMetrics) {
  TestServer ts(kStories);
  auto c = ts.client();
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(json::parse(health->body)["status"], "ok");
  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  const json m = json::parse(models->body);
  EXPECT_EQ(m["object"], "list");
  EXPECT_EQ(m["data"][0]["id"], "test-model");
  auto missing = c.Get("/v1/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(json::parse(missing->body)["error"]["type"], "not_found_error");
  EXPECT_EQ(ts.metric("snapvk_slots"), "4");
  EXPECT_EQ(ts.metric("snapvk_queue_length"), "0");
  EXPECT_EQ(ts.metric("snapvk_kv_bytes_in_use"), "0");
}

TEST(Serve, CompletionMatchesTheGenerationLoop) {
  TestServer ts(kStories);
  const std::string prompt = "Once upon a time, there was a little";
  const std::string expect = direct_greedy(ts.model, prompt, 24);
  const json r = ts.post("/v1/completions", {{"model", "test-model"}, {"prompt", prompt}, {"max_tokens", 24}});
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["choices"][0]["text"], expect);
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r["usage"]["prompt_tokens"], ts.model.tokenizer().encode(prompt, true).size());
  EXPECT_EQ(r["usage"]["completion_tokens"], 24);
  // A full cache keeps every token: its bytes are the full-cache equivalent.
  EXPECT_GT(r["snapvk"]["kv_bytes"].get<uint64_t>(), 0u);
  EXPECT_EQ(r["snapvk"]["kv_bytes"], r["snapvk"]["kv_bytes_full"]);
  // Streamed: the same text in pieces, then the finish chunk and [DONE].
  const auto events = ts.stream("/v1/completions", {{"prompt", prompt}, {"max_tokens", 24}, {"stream", true}});
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  json last;
  EXPECT_EQ(stream_text(events, false, &last), expect);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(std::stoull(ts.metric("snapvk_completion_tokens_total")), 48u);
}

// A request picks its cache's storage (kv_type for K and V, kv_type_k / kv_type_v for one); the
// answer is a session's of those types, and the session is not reused for another.
TEST(Serve, RequestsChooseTheirKvTypes) {
  TestServer ts(kStories);
  const std::string prompt = "Once upon a time, there was a little";
  for (const auto& [fields, name, k, v] :
       {std::tuple{json{{"kv_type", "bf16"}}, "bf16", KvType::BF16, KvType::BF16},
        std::tuple{json{{"kv_type", "bf16"}, {"kv_type_k", "f32"}}, "f32/bf16", KvType::F32, KvType::BF16},
        std::tuple{json::object(), "f16", KvType::F16, KvType::F16}}) {
    json body = {{"prompt", prompt}, {"max_tokens", 24}};
    body.update(fields);
    const json r = ts.post("/v1/completions", body);
    EXPECT_EQ(r["snapvk"]["kv_type"], name);
    SessionOptions so;
    so.set_kv_types({k, v});
    EXPECT_EQ(r["choices"][0]["text"], direct_greedy(ts.model, prompt, 24, false, so)) << name;
    // the cache's bytes are the types' (a K row and a V row per position and KV head)
    const ModelConfig& c = ts.model.config();
    EXPECT_EQ(r["snapvk"]["kv_bytes"].get<uint64_t>(),
              uint64_t(c.n_layer) * c.n_head_kv * r["usage"]["total_tokens"].get<uint64_t>() *
                  (KvTypes{k, v}).row_bytes(c.head_dim))
        << name;
  }
}

TEST(Serve, ChatStreamedEqualsNotStreamed) {
  TestServer ts(kStories);
  const json body = {
      {"messages",
       {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Tell me a story."}}}},
      {"max_tokens", 20}};
  const json whole = ts.post("/v1/chat/completions", body);
  EXPECT_EQ(whole["object"], "chat.completion");
  EXPECT_EQ(whole["choices"][0]["message"]["role"], "assistant");
  const std::string text = whole["choices"][0]["message"]["content"];
  EXPECT_FALSE(text.empty());
  json sbody = body;
  sbody["stream"] = true;
  sbody["stream_options"] = {{"include_usage", true}};
  const auto events = ts.stream("/v1/chat/completions", sbody);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(json::parse(events[0])["choices"][0]["delta"]["role"], "assistant");
  json last;
  EXPECT_EQ(stream_text(events, true, &last), text);
  EXPECT_EQ(last["object"], "chat.completion.chunk");
  // include_usage: a chunk with no choices and the usage, before [DONE].
  const json usage = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], whole["usage"]["completion_tokens"]);
}

TEST(Serve, ConversationContinuesFromTheSlotCache) {
  for (const char* policy : {"full", "snapkv"}) {
    SCOPED_TRACE(policy);
    TestServer ts(kStories);
    json body = {
        {"messages",
         {{{"role", "user"},
           {"content", "Once upon a time there was a girl named Lily who liked to play in the park with her dog."}}}},
        {"max_tokens", 12},
        {"kv_policy", policy}};
    if (std::string(policy) == "snapkv") body["kv_budget"] = 24, body["kv_window"] = 8;
    const json first = ts.post("/v1/chat/completions", body);
    EXPECT_EQ(first["snapvk"]["cached_tokens"], 0);
    body["messages"].push_back({{"role", "assistant"}, {"content", first["choices"][0]["message"]["content"]}});
    body["messages"].push_back({{"role", "user"}, {"content", "What happened next?"}});
    const json second = ts.post("/v1/chat/completions", body);
    // The slot held the first turn and its answer: only the new messages were prefilled.
    const uint32_t held =
        first["usage"]["prompt_tokens"].get<uint32_t>() + first["usage"]["completion_tokens"].get<uint32_t>();
    EXPECT_EQ(second["snapvk"]["cached_tokens"], held);
    EXPECT_EQ(second["snapvk"]["slot"], first["snapvk"]["slot"]);
    EXPECT_GT(second["usage"]["prompt_tokens"].get<uint32_t>(), first["usage"]["prompt_tokens"].get<uint32_t>());
    if (std::string(policy) == "snapkv") {  // the first prompt was compacted to 24 entries per head
      EXPECT_LT(second["snapvk"]["kv_bytes"].get<uint64_t>(), second["snapvk"]["kv_bytes_full"].get<uint64_t>());
    }
    // Another conversation does not continue it: a fresh start.
    body["messages"] = {{{"role", "user"}, {"content", "Hello"}}};
    EXPECT_EQ(ts.post("/v1/chat/completions", body)["snapvk"]["cached_tokens"], 0);
  }
}

TEST(Serve, StopSequencesEndTheAnswerBeforeThem) {
  server::StopText st({"END", "xy"});
  EXPECT_EQ(st.push("abcE"), "abc");  // "E" may start "END"
  EXPECT_EQ(st.push("Nx"), "EN");     // "N" ends no start of "END"; "x" may start "xy"
  EXPECT_EQ(st.push("q"), "xq");
  EXPECT_EQ(st.push("zzEN"), "zz");
  EXPECT_EQ(st.push("D tail"), "");
  EXPECT_TRUE(st.matched());
  EXPECT_EQ(st.flush(), "");

  TestServer ts(kStories);
  const std::string prompt = "Once upon a time";
  const std::string full = ts.post("/v1/completions", {{"prompt", prompt}, {"max_tokens", 30}})["choices"][0]["text"];
  ASSERT_GT(full.size(), 20u);
  const std::string stop = full.substr(12, 4);
  const json r = ts.post("/v1/completions", {{"prompt", prompt}, {"max_tokens", 30}, {"stop", {stop}}});
  EXPECT_EQ(r["choices"][0]["text"], full.substr(0, full.find(stop)));
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  const auto events =
      ts.stream("/v1/completions", {{"prompt", prompt}, {"max_tokens", 30}, {"stop", stop}, {"stream", true}});
  EXPECT_EQ(stream_text(events, false), full.substr(0, full.find(stop)));
}

TEST(Serve, BadRequestsGet4xxWithTheirReason) {
  server::ServerOptions o;
  o.max_body_bytes = 64 << 10;
  TestServer ts(kStories, o);
  struct Case {
    std::string path, body;
    int status;
    std::string param;
  };
  const std::string chat = "/v1/chat/completions", cmpl = "/v1/completions";
  const std::string msgs = R"("messages": [{"role": "user", "content": "hi"}])";
  const std::vector<Case> cases = {
      {chat, "{not json", 400, ""},
      {chat, "[1, 2]", 400, ""},
      {chat, "{}", 400, "messages"},
      {chat, R"({"messages": []})", 400, "messages"},
      {chat, R"({"messages": "hi"})", 400, "messages"},
      {chat, R"({"messages": [{"role": "wizard", "content": "hi"}]})", 400, "messages"},
      {chat, R"({"messages": [{"content": "hi"}]})", 400, "messages"},
      {chat, R"({"messages": [{"role": "user", "content": 5}]})", 400, "messages"},
      {chat, "{" + msgs + R"(, "max_tokens": "ten"})", 400, "max_tokens"},
      {chat, "{" + msgs + R"(, "max_tokens": -1})", 400, "max_tokens"},
      {chat, "{" + msgs + R"(, "max_tokens": 1.5})", 400, "max_tokens"},
      {chat, "{" + msgs + R"(, "temperature": 7})", 400, "temperature"},
      {chat, "{" + msgs + R"(, "top_p": "high"})", 400, "top_p"},
      {chat, "{" + msgs + R"(, "seed": "x"})", 400, "seed"},
      {chat, "{" + msgs + R"(, "stop": [1]})", 400, "stop"},
      {chat, "{" + msgs + R"(, "stop": ["a", "b", "c", "d", "e"]})", 400, "stop"},
      {chat, "{" + msgs + R"(, "n": 0})", 400, "n"},
      {chat, "{" + msgs + R"(, "n": 1000})", 400, "n"},
      {chat, "{" + msgs + R"(, "logprobs": 3})", 400, "logprobs"},
      {chat, "{" + msgs + R"(, "top_logprobs": 3})", 400, "top_logprobs"},
      {chat, "{" + msgs + R"(, "logprobs": true, "top_logprobs": 21})", 400, "top_logprobs"},
      {chat, "{" + msgs + R"(, "logprobs": true, "stream": true})", 400, "logprobs"},
      {chat, "{" + msgs + R"(, "max_tokens": 0})", 400, "max_tokens"},
      {chat, "{" + msgs + R"(, "stream": "yes"})", 400, "stream"},
      {chat, "{" + msgs + R"(, "model": "gpt-4"})", 404, "model"},
      {chat, "{" + msgs + R"(, "kv_policy": "magic"})", 400, "kv_policy"},
      {chat, "{" + msgs + R"(, "kv_type": "q9"})", 400, "kv_type"},
      {chat, "{" + msgs + R"(, "kv_type_v": 4})", 400, "kv_type_v"},
      {chat, "{" + msgs + R"(, "kv_type_v": "q4_0"})", 400, "kv_type_v"},  // head_dim 8: no 32-value blocks
      {chat, "{" + msgs + R"(, "kv_policy": "snapkv"})", 400, "kv_budget"},
      {chat, "{" + msgs + R"(, "kv_policy": "snapkv", "kv_budget": 8, "kv_window": 8})", 400, "kv_window"},
      {chat, "{" + msgs + R"(, "kv_budget": 64})", 400, "kv_budget"},
      {chat, "{" + msgs + R"(, "kv_policy": "snapkv", "kv_ratio": 2})", 400, "kv_ratio"},
      {chat, "{" + msgs + R"(, "pack": "docs"})", 400, "pack"},
      {cmpl, R"({"prompt": 42})", 400, "prompt"},
      {cmpl, R"({"prompt": ""})", 400, "prompt"},
      {cmpl, R"({"prompt": "hi", "logprobs": 21})", 400, "logprobs"},
      {cmpl, R"({"prompt": "hi", "logprobs": "3"})", 400, "logprobs"},
      {cmpl, R"({"prompt": "hi", "echo": true, "stream": true})", 400, "echo"},
      {cmpl, R"({"prompt": "hi", "echo": true, "logprobs": 1, "kv_policy": "snapkv", "kv_budget": 64})", 400, "echo"},
      {cmpl, R"({"prompt": "hi", "max_tokens": 0})", 400, "max_tokens"},
      {cmpl, R"({"prompt": []})", 400, "prompt"},
      {cmpl, R"({"prompt": [1, -2]})", 400, "prompt"},
      {cmpl, R"({"prompt": [1, 2.5]})", 400, "prompt"},
      {cmpl, R"({"prompt": [[1, 2], []]})", 400, "prompt"},
      {cmpl, R"({"prompt": ["a", 3]})", 400, "prompt"},
      {cmpl, R"({"prompt": [1, 99999999]})", 400, "prompt"},
      {cmpl, R"({"prompt": ["a", "b"], "n": 100})", 400, "n"},
      {cmpl, R"({"prompt": ")" + std::string(70000, 'a') + R"("})", 413, ""},
  };
  auto c = ts.client();
  for (const Case& k : cases) {
    SCOPED_TRACE(k.body.substr(0, 80));
    auto res = c.Post(k.path.c_str(), k.body, "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, k.status) << res->body;
    const json e = json::parse(res->body, nullptr, false);
    ASSERT_TRUE(e.is_object() && e.contains("error")) << res->body;
    EXPECT_FALSE(e["error"]["message"].get<std::string>().empty());
    EXPECT_TRUE(e["error"]["type"].is_string());
    if (!k.param.empty()) {
      EXPECT_EQ(e["error"]["param"], k.param);
    }
  }
  // A prompt longer than the context (stories260K: 2048 positions): 400 context_length_exceeded.
  std::string words;
  for (int i = 0; i < 2000; ++i) words += "the cat ";
  ASSERT_GE(ts.model.tokenizer().encode(words, true).size(), 2048u);
  auto res = c.Post("/v1/completions", json{{"prompt", words}}.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400) << res->body;
  EXPECT_EQ(json::parse(res->body)["error"]["code"], "context_length_exceeded");
  // Still serving.
  EXPECT_EQ(ts.post("/v1/completions", {{"prompt", "a"}, {"max_tokens", 2}})["usage"]["completion_tokens"], 2);
}

TEST(Serve, ApiKeyIsRequiredOnEveryRequest) {
  server::ServerOptions o;
  o.api_key = "sekrit";
  TestServer ts(kStories, o);
  auto c = ts.client();
  auto none = c.Get("/v1/models");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(json::parse(none->body)["error"]["code"], "invalid_api_key");
  c.set_bearer_token_auth("wrong");
  EXPECT_EQ(c.Post("/v1/completions", R"({"prompt": "a"})", "application/json")->status, 401);
  c.set_bearer_token_auth("sekrit");
  EXPECT_EQ(c.Get("/v1/models")->status, 200);
  EXPECT_EQ(c.Post("/v1/completions", R"({"prompt": "a", "max_tokens": 2})", "application/json")->status, 200);
}

// A streamed request on its own thread that reads until told to hang up (it then closes the
// connection, as a client that goes away does).
struct HangingStream {
  HangingStream(const TestServer& ts, const json& body) {
    thread = std::thread([this, &ts, body] {
      httplib::Client c = ts.client();
      httplib::Request req;
      req.method = "POST";
      req.path = "/v1/completions";
      req.body = body.dump();
      req.set_header("Content-Type", "application/json");
      req.content_receiver = [this](const char* data, size_t n, uint64_t, uint64_t) {
        received += n;
        if (std::string_view(data, n).find("[DONE]") != std::string_view::npos) finished = true;
        return !hang_up.load();
      };
      c.send(req);
    });
  }
  ~HangingStream() {
    hang_up = true;
    thread.join();
  }
  void wait_for_text() const {
    for (int i = 0; i < 6000 && received.load() == 0; ++i) std::this_thread::sleep_for(10ms);
    ASSERT_GT(received.load(), 0u) << "the stream never started";
  }
  std::atomic<size_t> received{0};
  std::atomic<bool> hang_up{false}, finished{false};
  std::thread thread;
};

// Polls a metric until it has `value` (or 60 s pass).
bool wait_metric(const TestServer& ts, const std::string& name, const std::string& value) {
  for (int i = 0; i < 600; ++i) {
    if (ts.metric(name) == value) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

const json kLong = {{"prompt", "Once upon a time"}, {"max_tokens", 2000}, {"stream", true}, {"stop", "zzzz"}};

TEST(Serve, FullQueueGets503AndAClientThatLeavesFreesItsSlot) {
  server::ServerOptions o;
  o.scheduler.parallel = 1;
  o.scheduler.queue_size = 1;
  TestServer ts(kStories, o);
  auto a = std::make_unique<HangingStream>(ts, kLong);
  a->wait_for_text();
  std::thread b([&] {  // waits in the queue until the slot is free
    const json r = ts.post("/v1/completions", {{"prompt", "Lily"}, {"max_tokens", 4}});
    EXPECT_EQ(r["usage"]["completion_tokens"], 4);
  });
  ASSERT_TRUE(wait_metric(ts, "snapvk_queue_length", "1"));
  const json full = ts.post("/v1/completions", {{"prompt", "Tom"}, {"max_tokens", 4}}, 503);
  EXPECT_EQ(full["error"]["code"], "queue_full");
  EXPECT_EQ(full["error"]["type"], "service_unavailable_error");
  const auto t0 = std::chrono::steady_clock::now();
  a.reset();  // hangs up: the server cancels its 2000 tokens, and b gets the slot
  b.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 30s);
  EXPECT_EQ(ts.metric("snapvk_requests_cancelled_total"), "1");
  EXPECT_TRUE(wait_metric(ts, "snapvk_slots_processing", "0"));
  // The cancelled stream's tokens were never counted as an answer: only b's 4.
  EXPECT_EQ(ts.metric("snapvk_completion_tokens_total"), "4");
}

uint64_t full_session_bytes(const Model& m) {
  return estimate_memory(m.config(), 0, memory_query(m, SessionOptions{}, 8)).peak;
}

TEST(Serve, MemoryModelAdmitsWhatFitsAndQueuesTheRest) {
  server::ServerOptions o;
  o.scheduler.parallel = 4;
  // Room for one full-cache session, not two: the second request waits although slots are free.
  TestServer ts(kStories, o, [](const Model& m) { return full_session_bytes(m) * 3 / 2; });
  auto a = std::make_unique<HangingStream>(ts, kLong);
  a->wait_for_text();
  std::thread b([&] {
    const json r = ts.post("/v1/completions", {{"prompt", "Lily"}, {"max_tokens", 4}});
    EXPECT_EQ(r["usage"]["completion_tokens"], 4);
  });
  ASSERT_TRUE(wait_metric(ts, "snapvk_queue_length", "1"));
  EXPECT_EQ(ts.metric("snapvk_slots_processing"), "1");
  a.reset();
  b.join();
  EXPECT_TRUE(wait_metric(ts, "snapvk_queue_length", "0"));
  EXPECT_LE(std::stoull(ts.metric("snapvk_device_memory_used_bytes")), ts.ctx.memory().budget());
}

TEST(Serve, ARequestThatCanNeverFitGets503AtOnce) {
  TestServer ts(kStories, {}, [](const Model& m) { return full_session_bytes(m) / 2; });
  const json r = ts.post("/v1/completions", {{"prompt", "Lily"}, {"max_tokens", 4}}, 503);
  EXPECT_EQ(r["error"]["code"], "out_of_memory");
  EXPECT_NE(r["error"]["message"].get<std::string>().find("device memory"), std::string::npos);
}

TEST(Serve, CompressedSessionsRunManyAtOnceWithinTheBudget) {
  server::ServerOptions o;
  o.scheduler.parallel = 8;
  o.scheduler.session.n_ctx = 512;
  o.scheduler.session.n_batch = 64;
  // Room for two full-cache sessions of 512 positions (and one compressing prefill).
  auto spare = [](const Model& m) {
    SessionOptions so;
    so.n_ctx = 512, so.n_batch = 64;
    const uint64_t full = estimate_memory(m.config(), 0, memory_query(m, so, 8)).peak;
    return 2 * full + full / 2 + DecodeBatch::bytes(m.config(), 8);
  };
  TestServer ts(kStories, o, spare);
  std::string prompt;
  for (int i = 0; prompt.size() < 800; ++i) prompt += "Lily saw " + std::to_string(i) + " birds. ";
  const size_t L = ts.model.tokenizer().encode(prompt, true).size();
  ASSERT_GT(L, 300u);
  ASSERT_LT(L, 480u);
  std::atomic<uint32_t> most{0};
  std::atomic<bool> done{false};
  std::thread watch([&] {  // the most sessions processing at once
    while (!done) {
      const std::string v = ts.metric("snapvk_slots_processing");
      if (!v.empty()) most = std::max<uint32_t>(most, std::stoul(v));
      std::this_thread::sleep_for(20ms);
    }
  });
  for (const char* policy : {"full", "snapkv"}) {
    SCOPED_TRACE(policy);
    most = 0;
    std::vector<std::thread> clients;
    std::atomic<int> ok{0};
    for (int i = 0; i < 8; ++i)
      clients.emplace_back([&, i] {
        json body = {{"prompt", std::to_string(i) + prompt}, {"max_tokens", 40}, {"kv_policy", policy}};
        if (std::string(policy) == "snapkv") body["kv_budget"] = 32, body["kv_window"] = 8;
        if (ts.post("/v1/completions", body)["usage"]["completion_tokens"] == 40) ok++;
      });
    for (auto& t : clients) t.join();
    EXPECT_EQ(ok.load(), 8);  // none refused for memory: the admitted ones fit, the rest waited
    if (std::string(policy) == "full") {
      EXPECT_LE(most.load(), 2u);
    } else {
      EXPECT_GT(most.load(), 2u);
    }
  }
  done = true;
  watch.join();
  EXPECT_LE(ts.ctx.memory().peak(), ts.ctx.memory().budget());
}

TEST(Serve, TwoHundredConcurrentRequestsWithBadOnesAmongThem) {
  server::ServerOptions o;
  o.scheduler.parallel = 4;
  o.scheduler.queue_size = 256;
  o.max_body_bytes = 16 << 10;
  TestServer ts(kStories, o);
  constexpr int kN = 200;
  std::vector<int> status(kN, 0);
  std::vector<std::string> body(kN);
  auto request = [&](int i) -> std::pair<std::string, std::string> {
    switch (i % 8) {
      case 0: return {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\""};  // truncated JSON
      case 1: return {"/v1/completions", R"({"prompt": "a", "max_tokens": "many"})"};
      case 2: return {"/v1/completions", R"({"prompt": "a", "model": "nope"})"};
      case 3: return {"/v1/completions", R"({"prompt": ")" + std::string(20000, 'x') + R"("})"};
      case 4:
        return {"/v1/chat/completions", json{{"messages", {{{"role", "user"}, {"content", "Hi " + std::to_string(i)}}}},
                                             {"max_tokens", 4},
                                             {"stream", true}}
                                            .dump()};
      default:
        return {"/v1/completions", json{{"prompt", "Once upon a time " + std::to_string(i)}, {"max_tokens", 4}}.dump()};
    }
  };
  std::vector<std::thread> clients;
  for (int i = 0; i < kN; ++i)
    clients.emplace_back([&, i] {
      auto [path, b] = request(i);
      auto res = ts.client().Post(path.c_str(), b, "application/json");
      if (res)
        status[i] = res->status, body[i] = res->body;
      else
        body[i] = "no response: " + httplib::to_string(res.error());
    });
  for (auto& t : clients) t.join();
  for (int i = 0; i < kN; ++i) {
    SCOPED_TRACE("request " + std::to_string(i) + ": " + body[i].substr(0, 200));
    const int expect = i % 8 == 0 || i % 8 == 1 ? 400 : i % 8 == 2 ? 404 : i % 8 == 3 ? 413 : 200;
    EXPECT_EQ(status[i], expect);
    if (status[i] != expect) continue;
    if (expect != 200) {
      EXPECT_FALSE(json::parse(body[i])["error"]["message"].get<std::string>().empty());
    } else if (i % 8 == 4) {
      EXPECT_NE(body[i].find("data: [DONE]"), std::string::npos);
    } else {
      EXPECT_EQ(json::parse(body[i])["usage"]["completion_tokens"], 4);
    }
  }
  EXPECT_EQ(ts.metric("snapvk_queue_length"), "0");
  EXPECT_EQ(ts.metric("snapvk_slots_processing"), "0");
  EXPECT_EQ(ts.client().Get("/health")->status, 200);
}

TEST(Serve, ConcurrentStreamsDecodeTogetherAndAnswerAsAlone) {
  TestServer ts(kStories);  // 4 slots, batched decode of up to 4 sequences
  const std::vector<std::string> prompts = {"Once upon a time", "Lily saw a big dog", "Tom had a red ball",
                                            "The sun was hot and"};
  std::vector<std::string> alone;
  for (const std::string& p : prompts)
    alone.push_back(ts.post("/v1/completions", {{"prompt", p}, {"max_tokens", 24}})["choices"][0]["text"]);
  const uint64_t steps0 = std::stoull(ts.metric("snapvk_decode_steps_total"));
  const uint64_t seqs0 = std::stoull(ts.metric("snapvk_decode_sequences_total"));
  std::vector<std::string> together(prompts.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < prompts.size(); ++i)
    clients.emplace_back([&, i] {
      together[i] = stream_text(
          ts.stream("/v1/completions", {{"prompt", prompts[i]}, {"max_tokens", 24}, {"stream", true}}), false);
    });
  for (auto& t : clients) t.join();
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(together[i], alone[i]) << prompts[i];
  // Some passes decoded several sequences at once.
  const uint64_t steps = std::stoull(ts.metric("snapvk_decode_steps_total")) - steps0;
  const uint64_t seqs = std::stoull(ts.metric("snapvk_decode_sequences_total")) - seqs0;
  EXPECT_GT(seqs, steps);
  EXPECT_EQ(seqs, 4u * 24u);  // every answer token enters its cache (a next turn continues from it)
}

// A loopback connection to `port`: its descriptor, or -1 with errno set.
int connect_to(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return fd;
  const int err = errno;
  close(fd);
  errno = err;
  return -1;
}

// `snapvk serve` as a process on a free loopback port: its pid and port (0: it did not start).
std::pair<pid_t, int> spawn_serve(const std::string& name, std::vector<std::string> extra = {}) {
  const std::string log = testing::TempDir() + name + ".log";
  std::vector<std::string> args = {cli_path(), "serve", "-m", model_path(kStories), "--port", "0", "--temp", "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  if (posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ) != 0) pid = 0;
  posix_spawn_file_actions_destroy(&fa);
  for (int i = 0; pid && i < 600; ++i) {
    std::smatch m;
    const std::string text = slurp(log);
    if (std::regex_search(text, m, std::regex("http://127\\.0\\.0\\.1:([0-9]+)"))) return {pid, std::stoi(m[1])};
    std::this_thread::sleep_for(100ms);
  }
  return {pid, 0};
}

TEST(Serve, SigtermFinishesTheStreamInFlightAndExits) {
  const auto [pid, port] = spawn_serve("serve_sigterm");
  ASSERT_GT(pid, 0) << "the server could not be spawned";
  ASSERT_GT(port, 0) << "the server did not start";
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(300s);
  std::atomic<size_t> got{0};
  std::atomic<bool> ended{false};
  std::string stream;
  std::thread reader([&] {
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = json{{"prompt", "Once upon a time"}, {"max_tokens", 1500}, {"stream", true}}.dump();
    req.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
      stream.append(d, n);
      if (stream.find("data: [DONE]") != std::string::npos) ended = true;
      got += n;
      return true;
    };
    c.send(req);
  });
  for (int i = 0; i < 6000 && got.load() == 0; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  // New connections are refused at once, while the stream goes on.
  int refused = -1;
  for (int i = 0; i < 500 && refused != ECONNREFUSED; ++i) {
    const int fd = connect_to(port);
    refused = fd < 0 ? errno : 0;
    if (fd >= 0) close(fd);
    std::this_thread::sleep_for(2ms);
  }
  EXPECT_EQ(refused, ECONNREFUSED);
  EXPECT_FALSE(ended.load()) << "the stream ended before the check";
  reader.join();
  int wstatus = 0;
  for (int i = 0; i < 600 && waitpid(pid, &wstatus, WNOHANG) == 0; ++i) std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << "status " << wstatus;
  // The stream ran to its end: its finish chunk and [DONE].
  EXPECT_NE(stream.find("\"finish_reason\":\"length\""), std::string::npos);
  EXPECT_NE(stream.find("data: [DONE]"), std::string::npos);
  if (!WIFEXITED(wstatus)) kill(pid, SIGKILL), waitpid(pid, &wstatus, 0);
}

TEST(Serve, SmolLM2ChatStreamedAndNot) {
  TestServer ts("SmolLM2-135M-Instruct.Q4_1.gguf");
  const json body = {{"messages", {{{"role", "user"}, {"content", "What is the capital of France?"}}}},
                     {"max_tokens", 8}};
  const json whole = ts.post("/v1/chat/completions", body);
  const std::string text = whole["choices"][0]["message"]["content"];
  EXPECT_NE(text.find("Paris"), std::string::npos) << text;
  json sbody = body;
  sbody["stream"] = true;
  EXPECT_EQ(stream_text(ts.stream("/v1/chat/completions", sbody), true), text);
  // With SnapKV the answer streams too, from a compacted cache.
  sbody["kv_policy"] = "snapkv";
  sbody["kv_budget"] = 32;
  sbody["kv_window"] = 8;
  json last;
  EXPECT_FALSE(stream_text(ts.stream("/v1/chat/completions", sbody), true, &last).empty());
  EXPECT_EQ(last["snapvk"]["kv_policy"], "snapkv");
}

// ---- knowledge packs (--packs DIR) ----

const std::string kStoryDoc =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun with her "
    "dog Max. One day, she saw a big red ball in the park. She ran to the ball and kicked it very high.";
const std::string kOtherDoc =
    "Tom was a small boy who liked to build towers with his blocks. His mom gave him a new box of blocks.";

// A fresh directory for packs.
std::filesystem::path pack_dir(const std::string& name) {
  const std::filesystem::path d = std::filesystem::path(testing::TempDir()) / ("serve_packs_" + name);
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

KvPolicyOptions policy_named(const std::string& name) {
  KvPolicyOptions kv;
  kv.policy = *parse_kv_policy(name);
  if (kv.compresses()) kv.budget = 24, kv.window = 8;
  return kv;
}

// The pack of `doc` (BOS included), as `snapvk pack` makes it, written to dir/name.svkv.
Pack write_doc_pack(const Model& m, const std::filesystem::path& dir, const std::string& name, const std::string& doc,
                    const KvPolicyOptions& kv, KvType type = KvType::F16) {
  SessionOptions so;
  so.kv = kv;
  so.kv_type_k = so.kv_type_v = type;
  Pack p = make_pack(m, so, m.tokenizer().encode(doc, true), {});
  write_pack_file((dir / (name + ".svkv")).string(), write_pack(p));
  return p;
}

// What a session that loads `p` (as `run --pack`) answers greedily to `tokens`.
std::string direct_after_pack(const Model& m, const Pack& p, const std::vector<int32_t>& tokens, uint32_t max_tokens,
                              const std::vector<int32_t>& stop = {}) {
  Session s(m, pack_session_options(p, SessionOptions{}));
  load_pack(s, p, "reference");
  SamplerParams sp;
  sp.temp = 0;
  Sampler sampler(sp);
  GenerateOptions go;
  go.max_tokens = max_tokens;
  go.stop_tokens = stop;
  GenerateResult r;
  generate(s, sampler, s.prefill(tokens), go, r);
  return r.text;
}

TEST(Serve, PackCompletionEqualsASessionThatLoadsThePack) {
  for (const char* policy : {"full", "snapkv"}) {
    SCOPED_TRACE(policy);
    const auto dir = pack_dir(policy);
    server::ServerOptions o;
    o.packs_dir = dir.string();
    o.scheduler.parallel = 1;  // one slot: every request below reuses the same session
    TestServer ts(kStories, o);
    // Written after the server started: a pack is read on its first use.
    const Pack p = write_doc_pack(ts.model, dir, "story", kStoryDoc, policy_named(policy));
    const uint32_t n = p.state.n_past;
    if (std::string(policy) == "snapkv") {
      ASSERT_GT(p.state.compacted_len, 0u);  // compacted
    }
    const std::string prompt = " Then Lily and Max went home and";
    const auto prompt_tokens = ts.model.tokenizer().encode(prompt, false);
    const std::string expect = direct_after_pack(ts.model, p, prompt_tokens, 24);
    ASSERT_FALSE(expect.empty());
    const json r = ts.post("/v1/completions", {{"prompt", prompt}, {"pack", "story"}, {"max_tokens", 24}});
    EXPECT_EQ(r["choices"][0]["text"], expect);
    EXPECT_EQ(r["usage"]["prompt_tokens"], n + prompt_tokens.size());  // the document counts, as cached
    EXPECT_EQ(r["usage"]["prompt_tokens_details"]["cached_tokens"], n);
    EXPECT_EQ(r["snapvk"]["pack"], "story");
    EXPECT_EQ(r["snapvk"]["pack_tokens"], n);
    EXPECT_EQ(r["snapvk"]["kv_policy"], policy);
    // Admission counted what the session's cache then took.
    const uint32_t n_ctx = default_n_ctx(ts.model.config());
    // (The memory model counts a compacted cache's heads tables, 8 bytes per layer and KV head,
    // which KvStats's allocated_bytes, the K/V rows, leaves out.)
    const ModelConfig& c = ts.model.config();
    const uint64_t tables = p.state.compacted_len ? 8ull * c.n_layer * c.n_head_kv : 0;
    EXPECT_EQ(r["snapvk"]["kv_bytes_allocated"].get<uint64_t>() + tables, KvCache::bytes_after_restore(c, p.kv_types, p.state, n_ctx, 256));
    // Streamed: the same text.
    const auto events =
        ts.stream("/v1/completions", {{"prompt", prompt}, {"pack", "story"}, {"max_tokens", 24}, {"stream", true}});
    json last;
    EXPECT_EQ(stream_text(events, false, &last), expect);
    EXPECT_EQ(last["snapvk"]["pack"], "story");
    // The same prompt without the pack: the slot's session starts over (no document before it).
    const json plain = ts.post("/v1/completions", {{"prompt", prompt}, {"max_tokens", 24}});
    EXPECT_EQ(plain["choices"][0]["text"], direct_greedy(ts.model, prompt, 24));
    EXPECT_EQ(plain["snapvk"]["cached_tokens"], 0);
    EXPECT_TRUE(plain["snapvk"]["pack"].is_null());
    // And with the pack again, after a request without it.
    EXPECT_EQ(ts.post("/v1/completions", {{"prompt", prompt}, {"pack", "story"}, {"max_tokens", 24}})["choices"][0]
                     ["text"],
              expect);
  }
}

TEST(Serve, PackChatEqualsChatPackAndContinuesOnlyWithTheSamePack) {
  const auto dir = pack_dir("chat");
  server::ServerOptions o;
  o.packs_dir = dir.string();
  o.scheduler.parallel = 1;  // one slot: a request with another pack gets the session that held this one
  TestServer ts(kStories, o);
  const Pack story = write_doc_pack(ts.model, dir, "story", kStoryDoc, policy_named("snapkv"));
  const Pack other = write_doc_pack(ts.model, dir, "other", kOtherDoc, policy_named("snapkv"));
  const Tokenizer& tok = ts.model.tokenizer();
  const ChatTemplate tmpl = ChatTemplate::for_model(ts.model.gguf(), tok);
  // As `chat --pack`: the conversation rendered by the template after the document, no BOS.
  auto turn_tokens = [&](const std::vector<ChatMessage>& msgs) {
    return tok.encode(ChatHistory().next(tmpl, msgs, true), false, true);
  };
  std::vector<ChatMessage> msgs = {{"user", "Who is Lily?"}};
  const std::string expect = direct_after_pack(ts.model, story, turn_tokens(msgs), 16, tmpl.stop_tokens(tok));
  json body = {{"messages", {{{"role", "user"}, {"content", "Who is Lily?"}}}}, {"pack", "story"}, {"max_tokens", 16}};
  const json first = ts.post("/v1/chat/completions", body);
  const std::string answer = first["choices"][0]["message"]["content"];
  EXPECT_EQ(answer, expect);
  EXPECT_EQ(first["snapvk"]["cached_tokens"], story.state.n_past);
  json sbody = body;
  sbody["stream"] = true;
  EXPECT_EQ(stream_text(ts.stream("/v1/chat/completions", sbody), true), expect);
  // The next turn: these messages continue what the slot holds after `first` (the stream left it
  // the same: greedy, the same answer).
  json next = body;
  next["messages"].push_back({{"role", "assistant"}, {"content", answer}});
  next["messages"].push_back({{"role", "user"}, {"content", "What did she do?"}});
  msgs = {{"user", "Who is Lily?"}, {"assistant", answer}, {"user", "What did she do?"}};
  // About another pack it does not continue: that pack's document, then the whole conversation.
  next["pack"] = "other";
  const json about_other = ts.post("/v1/chat/completions", next);
  EXPECT_EQ(about_other["snapvk"]["cached_tokens"], other.state.n_past);
  EXPECT_EQ(about_other["choices"][0]["message"]["content"],
            direct_after_pack(ts.model, other, turn_tokens(msgs), 16, tmpl.stop_tokens(tok)));
  // Nor without a pack.
  EXPECT_EQ(ts.post("/v1/chat/completions", body)["choices"][0]["message"]["content"], answer);  // the slot holds it again
  next.erase("pack");
  next["kv_policy"] = "snapkv", next["kv_budget"] = 24, next["kv_window"] = 8;  // the packs' policy
  EXPECT_EQ(ts.post("/v1/chat/completions", next)["snapvk"]["cached_tokens"], 0);
  next.erase("kv_policy"), next.erase("kv_budget"), next.erase("kv_window");
  // With the same pack it continues from the slot: only the new messages are prefilled.
  EXPECT_EQ(ts.post("/v1/chat/completions", body)["choices"][0]["message"]["content"], answer);
  next["pack"] = "story";
  const json second = ts.post("/v1/chat/completions", next);
  EXPECT_EQ(second["snapvk"]["cached_tokens"],
            first["usage"]["prompt_tokens"].get<uint32_t>() + first["usage"]["completion_tokens"].get<uint32_t>());
  EXPECT_EQ(second["snapvk"]["pack_tokens"], story.state.n_past);
}

TEST(Serve, BadPacksGet4xxAndTheServerKeepsServing) {
  const auto dir = pack_dir("bad");
  server::ServerOptions o;
  o.packs_dir = dir.string();
  TestServer ts(kStories, o);
  const Pack good = write_doc_pack(ts.model, dir, "good", kStoryDoc, policy_named("full"));
  write_doc_pack(ts.model, dir, "f32", kStoryDoc, policy_named("full"), KvType::F32);  // the server's cache is f16
  Pack alien = good;
  alien.model.tensor_hash ^= 1;  // made with other weights
  write_pack_file((dir / "alien.svkv").string(), write_pack(alien));
  std::vector<uint8_t> bytes = write_pack(good);
  bytes[bytes.size() - 5] ^= 0x40;  // a flipped bit in the payload
  write_pack_file((dir / "broken.svkv").string(), bytes);
  write_pack_file((dir.parent_path() / "outside.svkv").string(), write_pack(good));  // beside DIR, not in it
  struct Case {
    json pack;
    int status;
    std::string param, code, says;
  };
  const std::vector<Case> cases = {
      {"nope", 404, "pack", "pack_not_found", "nope"},
      {"../outside", 400, "pack", "invalid_value", "/"},
      {"a..b", 400, "pack", "invalid_value", ".."},
      {"..", 400, "pack", "invalid_value", ".."},
      {"sub/good", 400, "pack", "invalid_value", "/"},
      {"/tmp/good", 400, "pack", "invalid_value", "/"},
      {"..\\good", 400, "pack", "invalid_value", ""},
      {".hidden", 400, "pack", "invalid_value", ""},
      {"", 400, "pack", "invalid_value", ""},
      {42, 400, "pack", "invalid_type", ""},
      {"f32", 400, "pack", "pack_mismatch", "f32"},
      {"alien", 400, "pack", "invalid_pack", "another model"},
      {"broken", 400, "pack", "invalid_pack", "checksum"},
  };
  auto c = ts.client();
  for (const Case& k : cases)
    for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
      SCOPED_TRACE(k.pack.dump() + " " + path);
      json body = {{"pack", k.pack}, {"max_tokens", 4}};
      if (std::string(path) == "/v1/completions")
        body["prompt"] = " and then";
      else
        body["messages"] = {{{"role", "user"}, {"content", "hi"}}};
      auto res = c.Post(path, body.dump(), "application/json");
      ASSERT_TRUE(res);
      EXPECT_EQ(res->status, k.status) << res->body;
      const json e = json::parse(res->body, nullptr, false);
      ASSERT_TRUE(e.is_object() && e.contains("error")) << res->body;
      EXPECT_EQ(e["error"]["param"], k.param);
      EXPECT_EQ(e["error"]["code"], k.code);
      EXPECT_NE(e["error"]["message"].get<std::string>().find(k.says), std::string::npos) << res->body;
    }
  // A pack keeps the policy it was made with.
  const json kv = ts.post("/v1/completions", {{"prompt", "a"}, {"pack", "good"}, {"kv_policy", "full"}}, 400);
  EXPECT_EQ(kv["error"]["param"], "kv_policy");
  // /v1/models names the packs there are (good or not: they are checked when used).
  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["meta"]["packs"],
            json::array({"alien", "broken", "f32", "good"}));
  // Still serving, with the good pack and without one.
  const json r = ts.post("/v1/completions", {{"prompt", " and then"}, {"pack", "good"}, {"max_tokens", 4}});
  EXPECT_EQ(r["usage"]["completion_tokens"], 4);
  EXPECT_EQ(r["snapvk"]["pack_tokens"], good.state.n_past);
  EXPECT_EQ(ts.post("/v1/completions", {{"prompt", "a"}, {"max_tokens", 2}})["usage"]["completion_tokens"], 2);
  // A pack replaced on disk is read again: now it loads.
  write_pack_file((dir / "broken.svkv").string(), write_pack(good));
  EXPECT_EQ(ts.post("/v1/completions", {{"prompt", " and then"}, {"pack", "broken"}, {"max_tokens", 4}})["usage"]
                   ["completion_tokens"],
            4);
}

TEST(Serve, AdmissionCountsThePacksCache) {
  // A snapkv pack's cache is a fraction of a full session's; the budget holds exactly one
  // session with it (activations and the pack's cache), so a full-cache request never fits.
  for (const int64_t slack : {0, -1}) {
    SCOPED_TRACE(slack);
    const auto dir = pack_dir("memory");
    server::ServerOptions o;
    o.packs_dir = dir.string();
    o.scheduler.parallel = 1;  // no batch buffers: the sessions get all of the budget
    Pack p;
    TestServer ts(kStories, o, [&](const Model& m) {
      p = write_doc_pack(m, dir, "story", kStoryDoc, policy_named("snapkv"));
      const MemoryQuery q = memory_query(m, SessionOptions{}, 0);
      const uint32_t n_ctx = default_n_ctx(m.config());
      return activation_bytes(m.config(), q.n_batch, q.n_ctx, q.decode_chunk) +
             KvCache::bytes_after_restore(m.config(), p.kv_types, p.state, n_ctx, 256) + slack;
    });
    const json body = {{"prompt", " Then"}, {"pack", "story"}, {"max_tokens", 4}};
    if (slack < 0) {  // one byte short: it can never fit
      EXPECT_EQ(ts.post("/v1/completions", body, 503)["error"]["code"], "out_of_memory");
      continue;
    }
    EXPECT_EQ(ts.post("/v1/completions", body)["usage"]["completion_tokens"], 4);
    EXPECT_EQ(ts.post("/v1/completions", {{"prompt", "Lily"}, {"max_tokens", 4}}, 503)["error"]["code"],
              "out_of_memory");
    EXPECT_EQ(std::stoull(ts.metric("snapvk_memory_reserved_bytes")), std::stoull(ts.metric("snapvk_memory_available_bytes")));
    EXPECT_LE(std::stoull(ts.metric("snapvk_device_memory_used_bytes")), ts.ctx.memory().budget());
  }
}

TEST(Serve, PacksOptionNeedsADirectoryAndAServerWithoutItRefusesPack) {
  const CliResult r = run_cli({"serve", "-m", model_path(kStories), "--port", "0", "--packs", "/nonexistent/packs"});
  EXPECT_TRUE(r.exited);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("--packs: '/nonexistent/packs' is not a directory"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;  // one line
  TestServer ts(kStories);
  const json e = ts.post("/v1/completions", {{"prompt", "a"}, {"pack", "story"}}, 400);
  EXPECT_EQ(e["error"]["param"], "pack");
  EXPECT_EQ(e["error"]["code"], "packs_disabled");
}

// ---- what real clients send: token-id prompts, several choices, seed, logprobs, echo ----

double log_softmax_at(std::span<const float> logits, int32_t token) {
  double mx = -INFINITY, sum = 0;
  for (float v : logits) mx = std::max(mx, double(v));
  for (float v : logits) sum += std::exp(double(v) - mx);
  return double(logits[size_t(token)]) - mx - std::log(sum);
}

TEST(Serve, TokenIdPromptsSeveralChoicesAndSeed) {
  TestServer ts(kStories);
  const std::string prompt = "Once upon a time";
  const std::vector<int32_t> ids = ts.model.tokenizer().encode(prompt, true);  // BOS included: given verbatim
  const json text = ts.post("/v1/completions", {{"prompt", prompt}, {"max_tokens", 12}});
  const json by_ids = ts.post("/v1/completions", {{"prompt", ids}, {"max_tokens", 12}});
  EXPECT_EQ(by_ids["choices"][0]["text"], text["choices"][0]["text"]);
  EXPECT_EQ(by_ids["usage"]["prompt_tokens"], ids.size());
  // An array of prompts (texts and token-id arrays): one choice each, in order.
  const json many = ts.post("/v1/completions", {{"prompt", {ids, "Lily"}}, {"max_tokens", 12}});
  ASSERT_EQ(many["choices"].size(), 2u);
  EXPECT_EQ(many["choices"][0]["index"], 0);
  EXPECT_EQ(many["choices"][1]["index"], 1);
  EXPECT_EQ(many["choices"][0]["text"], text["choices"][0]["text"]);
  EXPECT_EQ(many["choices"][1]["text"], direct_greedy(ts.model, "Lily", 12));
  EXPECT_EQ(many["usage"]["completion_tokens"], 24);
  // Sampling: the same seed gives the same choices; n gives several.
  const json sampled = {{"prompt", prompt}, {"max_tokens", 16}, {"temperature", 1.0}, {"seed", 1234}, {"n", 3}};
  const json a = ts.post("/v1/completions", sampled), b = ts.post("/v1/completions", sampled);
  ASSERT_EQ(a["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(a["choices"][i]["text"], b["choices"][i]["text"]) << i;
  EXPECT_TRUE(a["choices"][0]["text"] != a["choices"][1]["text"] || a["choices"][1]["text"] != a["choices"][2]["text"]);
  // Streamed, the choices come interleaved, each with its index and its own end.
  json sbody = sampled;
  sbody["stream"] = true;
  std::vector<std::string> texts(3);
  int ends = 0;
  for (const std::string& e : ts.stream("/v1/completions", sbody)) {
    if (e == "[DONE]") break;
    const json c = json::parse(e)["choices"][0];
    texts[c["index"].get<size_t>()] += c["text"].get<std::string>();
    ends += !c["finish_reason"].is_null();
  }
  EXPECT_EQ(ends, 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(texts[i], a["choices"][i]["text"]) << i;
  // Chat takes n too.
  const json chat = ts.post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "hi"}}}},
                                                     {"max_tokens", 4}, {"n", 2}});
  EXPECT_EQ(chat["choices"].size(), 2u);
  EXPECT_EQ(chat["choices"][0]["message"]["content"], chat["choices"][1]["message"]["content"]);  // greedy
}

TEST(Serve, LogprobsAreTheLogSoftmaxOfTheSessionsLogits) {
  TestServer ts(kStories);
  const std::string prompt = "Once upon a time";
  const std::vector<int32_t> ids = ts.model.tokenizer().encode(prompt, true);
  constexpr uint32_t kTokens = 8;
  const json r = ts.post("/v1/completions", {{"prompt", prompt}, {"max_tokens", kTokens}, {"logprobs", 3}});
  const json& lp = r["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), kTokens) << r.dump();
  // The greedy tokens and their log-softmax from a session run directly.
  Session s(ts.model, SessionOptions{});
  std::span<const float> logits = s.prefill(ids);
  std::string text;
  for (uint32_t i = 0; i < kTokens; ++i) {
    const int32_t t = argmax(logits);
    const std::string piece = ts.model.tokenizer().token_to_piece(t);
    EXPECT_EQ(lp["tokens"][i], piece) << i;
    EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), log_softmax_at(logits, t), 1e-3) << i;
    EXPECT_EQ(lp["text_offset"][i], text.size()) << i;
    ASSERT_TRUE(lp["top_logprobs"][i].is_object());
    EXPECT_EQ(lp["top_logprobs"][i].size(), 3u);
    EXPECT_NEAR(lp["top_logprobs"][i][piece].get<double>(), log_softmax_at(logits, t), 1e-3) << i;  // greedy: the top one
    text += piece;
    logits = s.decode(t);
  }
  EXPECT_EQ(r["choices"][0]["text"], text);
  // Chat: {token, logprob, bytes, top_logprobs} per answer token.
  const json c = ts.post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "hi"}}}},
                                                  {"max_tokens", 6}, {"logprobs", true}, {"top_logprobs", 2}});
  const json& content = c["choices"][0]["logprobs"]["content"];
  ASSERT_TRUE(content.is_array()) << c.dump();
  std::string joined;
  for (const json& t : content) {
    joined += t["token"].get<std::string>();
    ASSERT_EQ(t["top_logprobs"].size(), 2u);
    EXPECT_EQ(t["top_logprobs"][0]["token"], t["token"]);
    EXPECT_NEAR(t["top_logprobs"][0]["logprob"].get<double>(), t["logprob"].get<double>(), 1e-6);
    EXPECT_EQ(t["bytes"].size(), t["token"].get<std::string>().size());
    EXPECT_LE(t["logprob"].get<double>(), 0.0);
  }
  EXPECT_EQ(joined, c["choices"][0]["message"]["content"]);
}

TEST(Serve, EchoScoresThePromptAsPrefixesOfASessionDo) {
  TestServer ts(kStories);
  const std::vector<int32_t> ids = ts.model.tokenizer().encode("Lily saw a big red ball", true);
  // As lm-evaluation-harness asks: token ids, echo, one token, logprobs 1.
  const json r = ts.post("/v1/completions", {{"prompt", {ids, ids}}, {"max_tokens", 1}, {"echo", true}, {"logprobs", 1}});
  ASSERT_EQ(r["choices"].size(), 2u);
  const json& lp = r["choices"][0]["logprobs"];
  ASSERT_EQ(lp["token_logprobs"].size(), ids.size() + 1) << r.dump();
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    text += ts.model.tokenizer().token_to_piece(ids[i]);
    if (i == 0) continue;
    Session s(ts.model, SessionOptions{});
    const std::span<const float> logits = s.prefill(std::span(ids).first(i));
    EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), log_softmax_at(logits, ids[i]), 1e-3) << i;
  }
  const std::string answer = direct_greedy(ts.model, "Lily saw a big red ball", 1);
  EXPECT_EQ(r["choices"][0]["text"], text + answer);
  EXPECT_EQ(r["choices"][1]["logprobs"], lp);
  // No answer at all: the prompt scored alone.
  const json z = ts.post("/v1/completions", {{"prompt", ids}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 0}});
  EXPECT_EQ(z["choices"][0]["logprobs"]["token_logprobs"].size(), ids.size());
  EXPECT_EQ(z["choices"][0]["text"], text);
  EXPECT_EQ(z["usage"]["completion_tokens"], 0);
  // The slot's scoring session makes way for a plain request, which still answers as alone.
  EXPECT_EQ(ts.post("/v1/completions", {{"prompt", "Lily"}, {"max_tokens", 8}})["choices"][0]["text"],
            direct_greedy(ts.model, "Lily", 8));
}

// ---- disconnects, SIGTERM, the packs kept in memory ----

TEST(Serve, ANonStreamedRequestIsCancelledWhenItsClientLeaves) {
  TestServer ts("SmolLM2-135M-Instruct.Q4_1.gguf");
  const int fd = connect_to(ts.port);
  ASSERT_GE(fd, 0);
  // Thousands of tokens: minutes on this model, unless cancelled.
  const std::string body = json{{"prompt", "Once upon a time"}, {"max_tokens", 4000}}.dump();
  const std::string req = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(write(fd, req.data(), req.size()), ssize_t(req.size()));
  for (int i = 0; i < 3000 && ts.metric("snapvk_slots_processing") != "1"; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(ts.metric("snapvk_slots_processing"), "1");
  // The load figures routers read.
  EXPECT_EQ(ts.metric("snapvk_requests_running"), "1");
  EXPECT_EQ(ts.metric("snapvk_requests_waiting"), "0");
  EXPECT_GT(std::stoull(ts.metric("snapvk_kv_cache_used_bytes")), 0u);
  EXPECT_EQ(ts.metric("snapvk_draining"), "0");
  std::this_thread::sleep_for(300ms);  // generating
  close(fd);
  const auto t0 = std::chrono::steady_clock::now();
  while (ts.metric("snapvk_slots_processing") != "0" && std::chrono::steady_clock::now() - t0 < 10s)
    std::this_thread::sleep_for(20ms);
  EXPECT_EQ(ts.metric("snapvk_slots_processing"), "0") << "still generating after its client left";
  EXPECT_EQ(ts.metric("snapvk_requests_cancelled_total"), "1");
  EXPECT_EQ(ts.metric("snapvk_completion_tokens_total"), "0");  // never answered
  // The slot serves the next request.
  EXPECT_EQ(ts.post("/v1/completions", {{"prompt", "Paris is"}, {"max_tokens", 2}})["usage"]["completion_tokens"], 2);
}

TEST(Serve, PacksInMemoryAreBoundedLeastRecentlyUsedFirst) {
  const auto dir = pack_dir("lru");
  server::ServerOptions o;
  o.packs_dir = dir.string();
  o.packs_cache_bytes = 1;  // room for one pack: the last one read
  TestServer ts(kStories, o);
  write_doc_pack(ts.model, dir, "story", kStoryDoc, KvPolicyOptions{});
  write_doc_pack(ts.model, dir, "other", kOtherDoc, KvPolicyOptions{});
  auto ask = [&](const char* pack) {
    return ts.post("/v1/completions", {{"prompt", " Then"}, {"pack", pack}, {"max_tokens", 4}})["choices"][0]["text"];
  };
  const json story = ask("story");
  EXPECT_EQ(ts.metric("snapvk_packs_cached"), "1");
  EXPECT_EQ(ts.metric("snapvk_pack_loads_total"), "1");
  EXPECT_EQ(ts.metric("snapvk_packs_cached_bytes"), std::to_string(std::filesystem::file_size(dir / "story.svkv")));
  ask("story");  // kept: not read again
  EXPECT_EQ(ts.metric("snapvk_pack_loads_total"), "1");
  ask("other");
  EXPECT_EQ(ts.metric("snapvk_packs_cached"), "1");
  EXPECT_EQ(ts.metric("snapvk_pack_evictions_total"), "1");
  EXPECT_EQ(ask("story"), story);  // read again, the same answer
  EXPECT_EQ(ts.metric("snapvk_pack_loads_total"), "3");
  EXPECT_EQ(ts.metric("snapvk_pack_evictions_total"), "2");
}

// ---- several processes behind nginx (docs/server.md "Past one process") ----

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// The nginx configuration of docs/server.md for `ports`, listening on `port`, its files in `dir`.
std::string nginx_conf(const std::filesystem::path& dir, int port, const std::vector<int>& ports) {
  std::string servers;
  for (int p : ports) servers += "    server 127.0.0.1:" + std::to_string(p) + " max_fails=1 fail_timeout=60s;\n";
  return "daemon off;\nworker_processes 1;\npid " + (dir / "nginx.pid").string() + ";\nerror_log " +
         (dir / "error.log").string() +
         ";\nevents { worker_connections 256; }\nhttp {\n  access_log off;\n"
         "  client_body_temp_path " + (dir / "body").string() + ";\n  proxy_temp_path " + (dir / "proxy").string() +
         ";\n"
         "  map $http_x_conversation_id $snapvk_key { \"\" $request_id; default $http_x_conversation_id; }\n"
         "  upstream snapvk {\n    hash $snapvk_key consistent;\n" + servers +
         "    keepalive 16;\n  }\n  server {\n    listen 127.0.0.1:" + std::to_string(port) +
         ";\n    location / {\n      proxy_pass http://snapvk;\n      proxy_http_version 1.1;\n"
         "      proxy_set_header Connection \"\";\n      proxy_buffering off;\n      proxy_read_timeout 600s;\n"
         "      proxy_next_upstream error timeout http_503 non_idempotent;\n    }\n  }\n}\n";
}

uint64_t served_2xx(int port) {
  httplib::Client c("127.0.0.1", port);
  auto res = c.Get("/metrics");
  std::smatch m;
  return res && std::regex_search(res->body, m, std::regex("snapvk_requests_total\\{status=\"2xx\"\\} ([0-9]+)"))
             ? std::stoull(m[1])
             : 0;
}

TEST(Serve, NginxRoutesEachConversationToTheProcessHoldingItsCache) {
  const char* nginx = "/usr/sbin/nginx";
  if (!std::filesystem::exists(nginx)) GTEST_SKIP() << "nginx is not installed (tools/install-deps.sh installs it)";
  std::vector<std::pair<pid_t, int>> procs;
  for (const char* name : {"lb_a", "lb_b", "lb_c"}) procs.push_back(spawn_serve(name, {"--parallel", "32"}));  // room for every conversation
  struct Reap {  // whatever the test's outcome, no process outlives it
    std::vector<pid_t> pids;
    pid_t nginx = 0;  // SIGTERM: its master ends its workers (SIGKILL would leave them)
    ~Reap() {
      for (pid_t p : pids) kill(p, SIGKILL), waitpid(p, nullptr, 0);
      if (nginx) kill(nginx, SIGTERM), waitpid(nginx, nullptr, 0);
    }
  } reap;
  for (auto& [pid, port] : procs) {
    reap.pids.push_back(pid);
    ASSERT_GT(port, 0) << "a server did not start";
  }
  const std::filesystem::path dir = pack_dir("nginx");
  const int lb = free_port();
  std::ofstream(dir / "nginx.conf") << nginx_conf(dir, lb, {procs[0].second, procs[1].second, procs[2].second});
  const std::vector<std::string> args = {nginx, "-p", dir.string(), "-c", (dir / "nginx.conf").string()};
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t nginx_pid = 0;
  ASSERT_EQ(posix_spawn(&nginx_pid, nginx, nullptr, nullptr, argv.data(), environ), 0);
  reap.nginx = nginx_pid;
  int up = -1;
  for (int i = 0; i < 300 && up < 0; ++i) {
    up = connect_to(lb);
    if (up < 0) std::this_thread::sleep_for(20ms);
  }
  ASSERT_GE(up, 0) << slurp(dir / "error.log");
  close(up);

  httplib::Client c("127.0.0.1", lb);
  c.set_read_timeout(300s);
  // A chat turn: the conversation so far (an answer goes back as the assistant's message).
  auto say = [&](const std::string& key, const json& messages) {
    auto res = c.Post("/v1/chat/completions", {{"X-Conversation-Id", key}},
                      json{{"messages", messages}, {"max_tokens", 6}}.dump(), "application/json");
    EXPECT_TRUE(res && res->status == 200) << (res ? res->body : "no response");
    return res && res->status == 200 ? json::parse(res->body) : json();
  };
  // Which process answered: the one whose answered count went up (one request at a time).
  auto served_by = [&](std::vector<uint64_t>& before) {
    for (size_t i = 0; i < procs.size(); ++i) {
      const uint64_t now = served_2xx(procs[i].second);
      if (now > before[i] + 1) return int(i);  // its /metrics request counted too
    }
    return -1;
  };
  // Twelve conversations: each one's second turn continues from the cache of the process that
  // answered its first.
  struct Conv {
    std::string key;
    json messages;
    int proc = -1;
    void turn(const json& answer, const std::string& next) {
      messages.push_back({{"role", "assistant"}, {"content", answer["choices"][0]["message"]["content"]}});
      messages.push_back({{"role", "user"}, {"content", next}});
    }
  };
  auto user = [](const std::string& text) { return json::array({{{"role", "user"}, {"content", text}}}); };
  std::vector<Conv> convs;
  for (int k = 0; k < 12; ++k) {
    Conv cv{"conversation-" + std::to_string(k), user("Lily had " + std::to_string(k + 2) + " red balls.")};
    std::vector<uint64_t> before;
    for (auto& pp : procs) before.push_back(served_2xx(pp.second));
    cv.turn(say(cv.key, cv.messages), "What happened next?");
    cv.proc = served_by(before);
    ASSERT_GE(cv.proc, 0);
    convs.push_back(cv);
  }
  std::set<int> used;
  for (Conv& cv : convs) {
    used.insert(cv.proc);
    const json r = say(cv.key, cv.messages);
    EXPECT_GT(r["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>(), 0) << cv.key << " moved";
    cv.turn(r, "And then?");
  }
  EXPECT_GE(used.size(), 2u) << "the conversations all hashed to one process";
  // Draining process 0 (SIGTERM) while it streams an answer: it refuses connections, so nginx
  // passes new conversations to the others, and the stream runs to its end.
  const auto on0 = std::find_if(convs.begin(), convs.end(), [](const Conv& cv) { return cv.proc == 0; });
  ASSERT_NE(on0, convs.end());
  std::atomic<bool> streaming{false};
  std::string stream;
  std::thread reader([&] {
    httplib::Client sc("127.0.0.1", lb);
    sc.set_read_timeout(300s);
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.headers = {{"X-Conversation-Id", on0->key}};
    req.body = json{{"prompt", "Once upon a time"}, {"max_tokens", 1500}, {"stream", true}}.dump();
    req.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
      stream.append(d, n);
      streaming = true;
      return true;
    };
    sc.send(req);
  });
  for (int i = 0; i < 6000 && !streaming.load(); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(kill(procs[0].first, SIGTERM), 0);
  std::this_thread::sleep_for(100ms);
  const uint64_t others = served_2xx(procs[1].second) + served_2xx(procs[2].second);
  for (int k = 0; k < 6; ++k) EXPECT_EQ(say("new-" + std::to_string(k), user("Max ran"))["usage"]["completion_tokens"], 6);
  // Six answers and the two /metrics reads each side of them (ours: one per process).
  EXPECT_EQ(served_2xx(procs[1].second) + served_2xx(procs[2].second), others + 6 + 2);
  reader.join();
  EXPECT_NE(stream.find("data: [DONE]"), std::string::npos) << "the draining process cut its stream";
  int wstatus = 0;
  for (int i = 0; i < 600 && waitpid(procs[0].first, &wstatus, WNOHANG) == 0; ++i) std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
  reap.pids.erase(reap.pids.begin());
  // Killing process 1 loses its conversations' caches only: process 2's continue from theirs;
  // process 0's and 1's start over on a process still up.
  kill(procs[1].first, SIGKILL);
  waitpid(procs[1].first, nullptr, 0);
  reap.pids.erase(reap.pids.begin());
  for (Conv& cv : convs) {
    const json r = say(cv.key, cv.messages);
    ASSERT_TRUE(r.is_object()) << cv.key;
    const int cached = r["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>();
    if (cv.proc == 2)
      EXPECT_GT(cached, 0) << cv.key << " lost its cache";
    else
      EXPECT_EQ(cached, 0) << cv.key;
  }
}

}  // namespace
}  // namespace snapvk::test
