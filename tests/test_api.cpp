// The public API (include/snapvk/snapvk.h and snapvk.hpp), used as an application would: one
// model serving sessions on two threads at once, cancellation from another thread, argument
// checks of every function, error codes for bad files, budgets and hostile session options, KV
// statistics, and the C++ wrappers over a multi-turn conversation on a compressed cache; packs
// and endless chat (ApiPack); chat templates and chat sessions (ApiChat).
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <snapvk/snapvk.h>
#include <snapvk/snapvk.hpp>

#include "tests/test_util.h"

namespace snapvk::test {
namespace {

std::string story(int repeats) {
  std::string text;
  for (int i = 0; i < repeats; ++i) text += "Once upon a time, there was a little girl named Lily. She loved to play. ";
  return text;
}

snapvk_session_options session_options(uint32_t n_ctx, const char* policy = "full", uint32_t budget = 0,
                                       uint32_t window = 0) {
  snapvk_session_options o{};
  o.struct_size = sizeof o;
  o.n_ctx = n_ctx;
  o.kv_policy_name = policy;
  o.kv_budget = budget;
  o.kv_window = window;
  return o;
}

// One device and one model for the whole suite (as an application would hold them).
struct ApiTest : ::testing::Test {
  static snapvk_device* device() {
    static snapvk_device* d = [] {
      snapvk_device* out = nullptr;
      const snapvk_status st = snapvk_device_create(nullptr, &out);
      if (st != SNAPVK_OK) ADD_FAILURE() << "snapvk_device_create: " << snapvk_last_error();
      return out;
    }();
    return d;
  }
  static snapvk_model* model() {
    static snapvk_model* m = [] {
      snapvk_model* out = nullptr;
      const snapvk_status st = snapvk_model_load(device(), model_path("stories260K.gguf").c_str(), nullptr, &out);
      if (st != SNAPVK_OK) ADD_FAILURE() << "snapvk_model_load: " << snapvk_last_error();
      return out;
    }();
    return m;
  }
  static uint64_t validation_errors(snapvk_device* d) {
    snapvk_device_memory m{};
    m.struct_size = sizeof m;
    EXPECT_EQ(snapvk_device_get_memory(d, &m), SNAPVK_OK) << snapvk_last_error();
    return m.validation_errors;
  }
  void SetUp() override {
    ASSERT_NE(device(), nullptr) << "no Vulkan device";
    ASSERT_NE(model(), nullptr) << "cannot load " << model_path("stories260K.gguf");
    errors_before_ = validation_errors(device());
  }
  void TearDown() override { EXPECT_EQ(validation_errors(device()), errors_before_) << "Vulkan validation errors"; }
  uint64_t errors_before_ = 0;
};

struct Collected {
  std::vector<int32_t> tokens;
  std::string text;
};

int collect(int32_t token, const char* piece, void* user) {
  auto* c = static_cast<Collected*>(user);
  c->tokens.push_back(token);
  c->text += piece;
  return 0;
}

// Greedy generation of n tokens after `prompt` in a new session.
std::vector<int32_t> run_greedy(snapvk_model* m, const snapvk_session_options& o, const std::string& prompt, uint32_t n,
                                snapvk_kv_stats* stats = nullptr) {
  snapvk_session* s = nullptr;
  EXPECT_EQ(snapvk_session_create(m, &o, &s), SNAPVK_OK) << snapvk_last_error();
  if (!s) return {};
  EXPECT_EQ(snapvk_session_prefill_text(s, prompt.c_str()), SNAPVK_OK) << snapvk_last_error();
  Collected c;
  snapvk_generate_result r{};
  r.struct_size = sizeof r;
  EXPECT_EQ(snapvk_session_generate(s, nullptr, n, collect, &c, &r), SNAPVK_OK) << snapvk_last_error();
  EXPECT_EQ(r.n_tokens, c.tokens.size());
  if (stats) {
    stats->struct_size = sizeof *stats;
    EXPECT_EQ(snapvk_session_get_kv_stats(s, stats), SNAPVK_OK) << snapvk_last_error();
  }
  snapvk_session_free(s);
  return c.tokens;
}

TEST(ApiVersion, AbiAndVersionString) {
  EXPECT_EQ(snapvk_abi_version(), uint32_t(SNAPVK_ABI_VERSION));
  EXPECT_STREQ(snapvk_version_string(), SNAPVK_VERSION);
  EXPECT_STREQ(snapvk_status_name(SNAPVK_OUT_OF_MEMORY), "SNAPVK_OUT_OF_MEMORY");
  EXPECT_STREQ(snapvk_status_name(snapvk_status(99)), "SNAPVK_UNKNOWN");
  EXPECT_STREQ(snapvk_last_error(), "");
}

TEST_F(ApiTest, DevicesAreListedAndDescribed) {
  uint32_t n = 0;
  ASSERT_EQ(snapvk_device_count(&n), SNAPVK_OK) << snapvk_last_error();
  ASSERT_GE(n, 1u);
  snapvk_device_info info{};
  info.struct_size = sizeof info;
  ASSERT_EQ(snapvk_device_describe(0, &info), SNAPVK_OK) << snapvk_last_error();
  EXPECT_GT(std::strlen(info.name), 0u);
  EXPECT_GE(info.api_version, (1u << 22) | (2u << 12));
  EXPECT_GT(info.subgroup_size, 0u);
  EXPECT_EQ(snapvk_device_describe(n, &info), SNAPVK_INVALID_ARGUMENT);
  EXPECT_NE(std::string(snapvk_last_error()).find("out of range"), std::string::npos) << snapvk_last_error();

  snapvk_device_info used{};
  used.struct_size = sizeof used;
  ASSERT_EQ(snapvk_device_get_info(device(), &used), SNAPVK_OK) << snapvk_last_error();
  EXPECT_GT(std::strlen(used.name), 0u);
  EXPECT_GT(std::strlen(used.driver), 0u);
  // An old caller's smaller struct is filled only as far as it reaches.
  struct Old {
    uint32_t struct_size, index;
    int32_t type;
    uint32_t guard;
  } old{sizeof(uint32_t) * 3, 77, 77, 0xdeadbeef};
  ASSERT_EQ(snapvk_device_get_info(device(), reinterpret_cast<snapvk_device_info*>(&old)), SNAPVK_OK);
  EXPECT_EQ(old.struct_size, sizeof(uint32_t) * 3);
  EXPECT_EQ(old.index, used.index);
  EXPECT_EQ(old.type, used.type);
  EXPECT_EQ(old.guard, 0xdeadbeefu);

  snapvk_model_info mi{};
  mi.struct_size = sizeof mi;
  ASSERT_EQ(snapvk_model_get_info(model(), &mi), SNAPVK_OK) << snapvk_last_error();
  EXPECT_EQ(mi.n_vocab, 512u);
  EXPECT_EQ(mi.n_layer, 5u);
  EXPECT_EQ(mi.n_head_kv, 4u);
  EXPECT_EQ(mi.bos, 1);
  EXPECT_STREQ(mi.arch, "llama");
  EXPECT_GT(mi.weight_bytes, 0u);
}

// The main case: one model, two sessions on two threads at once (SnapKV and full),
// each giving exactly what it gives alone.
TEST_F(ApiTest, ConcurrentSessionsOnOneModelMatchSingleSessionRuns) {
  const std::string prompt = story(6);
  const auto snap = session_options(256, "snapkv", 64, 8);
  const auto full = session_options(256);
  snapvk_kv_stats snap_stats{}, full_stats{};
  const auto expect_snap = run_greedy(model(), snap, prompt, 48, &snap_stats);
  const auto expect_full = run_greedy(model(), full, prompt, 48, &full_stats);
  ASSERT_EQ(expect_snap.size(), 48u);
  ASSERT_EQ(expect_full.size(), 48u);
  EXPECT_GT(snap_stats.prompt_len, 64u);
  EXPECT_GT(snap_stats.ratio, 1.0) << "SnapKV should keep less than a full cache";
  EXPECT_LT(snap_stats.retained_bytes, snap_stats.full_bytes);
  EXPECT_EQ(snap_stats.kv_policy, SNAPVK_KV_POLICY_SNAPKV);
  EXPECT_DOUBLE_EQ(full_stats.ratio, 1.0);
  EXPECT_EQ(full_stats.prompt_len, 0u) << "a full cache is not compressed";
  EXPECT_EQ(full_stats.n_past, snap_stats.n_past);
  EXPECT_EQ(snap_stats.n_past, snap_stats.prompt_len + 48u);

  std::atomic<int> ready{0};
  std::vector<std::vector<int32_t>> got_snap, got_full;
  auto worker = [&](const snapvk_session_options& o, std::vector<std::vector<int32_t>>& out) {
    ++ready;
    while (ready.load() < 2) std::this_thread::yield();
    for (int round = 0; round < 3; ++round) out.push_back(run_greedy(model(), o, prompt, 48));
  };
  std::thread a(worker, std::cref(snap), std::ref(got_snap));
  std::thread b(worker, std::cref(full), std::ref(got_full));
  a.join();
  b.join();
  ASSERT_EQ(got_snap.size(), 3u);
  ASSERT_EQ(got_full.size(), 3u);
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(got_snap[round], expect_snap) << "snapkv, round " << round;
    EXPECT_EQ(got_full[round], expect_full) << "full, round " << round;
  }
}

TEST_F(ApiTest, CancelFromAnotherThreadDuringPrefill) {
  struct Progress {
    std::atomic<bool> started{false}, sent{false};
  } progress;
  auto o = session_options(2048, "snapkv", 64, 8);
  o.n_batch = 8;
  o.on_progress = [](uint64_t, uint64_t, void* user) {
    auto* p = static_cast<Progress*>(user);
    p->started = true;
    while (!p->sent) std::this_thread::yield();  // deterministic: the cancel lands while prefill runs
    return 0;
  };
  o.progress_user_data = &progress;
  snapvk_session* s = nullptr;
  ASSERT_EQ(snapvk_session_create(model(), &o, &s), SNAPVK_OK) << snapvk_last_error();
  const std::string long_prompt = story(40);
  std::thread canceller([&] {
    while (!progress.started) std::this_thread::yield();
    EXPECT_EQ(snapvk_session_cancel(s), SNAPVK_OK);
    progress.sent = true;
  });
  EXPECT_EQ(snapvk_session_prefill_text(s, long_prompt.c_str()), SNAPVK_CANCELLED);
  EXPECT_NE(std::string(snapvk_last_error()).find("cancelled"), std::string::npos) << snapvk_last_error();
  canceller.join();
  snapvk_kv_stats st{};
  st.struct_size = sizeof st;
  ASSERT_EQ(snapvk_session_get_kv_stats(s, &st), SNAPVK_OK);
  EXPECT_EQ(st.n_past, 0u);
  const float* logits = nullptr;
  size_t n = 0;
  EXPECT_EQ(snapvk_session_get_logits(s, &logits, &n), SNAPVK_INVALID_ARGUMENT) << "nothing prefilled yet";

  // Usable afterwards, with the same results as a new session.
  const std::string prompt = story(6);
  ASSERT_EQ(snapvk_session_prefill_text(s, prompt.c_str()), SNAPVK_OK) << snapvk_last_error();
  Collected c;
  ASSERT_EQ(snapvk_session_generate(s, nullptr, 24, collect, &c, nullptr), SNAPVK_OK) << snapvk_last_error();
  snapvk_session_free(s);
  o.n_batch = 0, o.on_progress = nullptr;
  EXPECT_EQ(c.tokens, run_greedy(model(), o, prompt, 24));
}

// kv_type sets K and V; kv_type_v, when kv_type_v_set, V's alone. The stats name both, and the
// cache holds a K row and a V row of those types per position and KV head.
TEST_F(ApiTest, KvTypeSetsBothAndKvTypeVSetsV) {
  snapvk_session_options o = session_options(64, "full", 0, 0);
  o.kv_type = SNAPVK_KV_TYPE_F32;
  o.kv_type_v = SNAPVK_KV_TYPE_BF16, o.kv_type_v_set = 1;
  snapvk_session* s = nullptr;
  ASSERT_EQ(snapvk_session_create(model(), &o, &s), SNAPVK_OK) << snapvk_last_error();
  ASSERT_EQ(snapvk_session_prefill_text(s, "Once upon a time"), SNAPVK_OK) << snapvk_last_error();
  snapvk_kv_stats st{};
  st.struct_size = sizeof st;
  ASSERT_EQ(snapvk_session_get_kv_stats(s, &st), SNAPVK_OK);
  EXPECT_EQ(st.kv_type, SNAPVK_KV_TYPE_F32);
  EXPECT_EQ(st.kv_type_v, SNAPVK_KV_TYPE_BF16);
  snapvk_model_info c{};
  c.struct_size = sizeof c;
  ASSERT_EQ(snapvk_model_get_info(model(), &c), SNAPVK_OK);
  EXPECT_EQ(st.retained_bytes, uint64_t(c.n_layer) * c.n_head_kv * st.n_past * (4ull + 2ull) * c.head_dim);
  snapvk_session_free(s);
  o.kv_type_v_set = 0;  // both f32
  ASSERT_EQ(snapvk_session_create(model(), &o, &s), SNAPVK_OK) << snapvk_last_error();
  ASSERT_EQ(snapvk_session_get_kv_stats(s, &st), SNAPVK_OK);
  EXPECT_EQ(st.kv_type_v, SNAPVK_KV_TYPE_F32);
  snapvk_session_free(s);
  o.kv_type_v_set = 1, o.kv_type_v = 17;
  EXPECT_EQ(snapvk_session_create(model(), &o, &s), SNAPVK_INVALID_ARGUMENT);
  EXPECT_NE(std::string(snapvk_last_error()).find("kv_type_v 17"), std::string::npos) << snapvk_last_error();
}

TEST_F(ApiTest, CancelFromAnotherThreadDuringGenerateKeepsTokensAndContinues) {
  const auto o = session_options(256, "snapkv", 64, 8);
  const std::string prompt = story(6);
  const auto expected = run_greedy(model(), o, prompt, 20);
  ASSERT_EQ(expected.size(), 20u);

  snapvk_session* s = nullptr;
  ASSERT_EQ(snapvk_session_create(model(), &o, &s), SNAPVK_OK) << snapvk_last_error();
  ASSERT_EQ(snapvk_session_prefill_text(s, prompt.c_str()), SNAPVK_OK) << snapvk_last_error();
  struct Handshake {
    Collected c;
    std::atomic<bool> third{false}, cancelled{false};
  } h;
  std::thread canceller([&] {
    while (!h.third) std::this_thread::yield();
    EXPECT_EQ(snapvk_session_cancel(s), SNAPVK_OK);
    h.cancelled = true;
  });
  auto on_token = [](int32_t token, const char* piece, void* user) {
    auto& hs = *static_cast<Handshake*>(user);
    collect(token, piece, &hs.c);
    if (hs.c.tokens.size() == 3) {
      hs.third = true;
      while (!hs.cancelled) std::this_thread::yield();  // the request lands before the next token
    }
    return 0;
  };
  snapvk_generate_result r{};
  r.struct_size = sizeof r;
  EXPECT_EQ(snapvk_session_generate(s, nullptr, 20, on_token, &h, &r), SNAPVK_CANCELLED);
  canceller.join();
  EXPECT_EQ(r.n_tokens, 3u);
  EXPECT_EQ(r.stop_reason, SNAPVK_STOP_CANCELLED);
  // The three tokens are in the cache: generation goes on as if never interrupted.
  ASSERT_EQ(snapvk_session_generate(s, nullptr, 17, collect, &h.c, &r), SNAPVK_OK) << snapvk_last_error();
  EXPECT_EQ(r.stop_reason, SNAPVK_STOP_MAX_TOKENS);
  EXPECT_EQ(h.c.tokens, expected);
  snapvk_session_free(s);
}

TEST_F(ApiTest, CancelRequestedWhileIdleStopsTheNextCallAndResetDropsIt) {
  const auto o = session_options(256);
  snapvk_session* s = nullptr;
  ASSERT_EQ(snapvk_session_create(model(), &o, &s), SNAPVK_OK) << snapvk_last_error();
  ASSERT_EQ(snapvk_session_cancel(s), SNAPVK_OK);
  EXPECT_EQ(snapvk_session_prefill_text(s, "Once upon a time"), SNAPVK_CANCELLED);
  ASSERT_EQ(snapvk_session_prefill_text(s, "Once upon a time"), SNAPVK_OK) << snapvk_last_error();
  ASSERT_EQ(snapvk_session_cancel(s), SNAPVK_OK);
  snapvk_generate_result r{};
  r.struct_size = sizeof r;
  EXPECT_EQ(snapvk_session_generate(s, nullptr, 4, nullptr, nullptr, &r), SNAPVK_CANCELLED);
  EXPECT_EQ(r.n_tokens, 0u);
  ASSERT_EQ(snapvk_session_cancel(s), SNAPVK_OK);
  ASSERT_EQ(snapvk_session_reset(s), SNAPVK_OK);
  EXPECT_EQ(snapvk_session_prefill_text(s, "Once upon a time"), SNAPVK_OK) << snapvk_last_error();
  EXPECT_EQ(snapvk_session_generate(s, nullptr, 4, nullptr, nullptr, &r), SNAPVK_OK) << snapvk_last_error();
  EXPECT_EQ(r.n_tokens, 4u);
  snapvk_session_free(s);
}

TEST_F(ApiTest, ProgressCallbackCanCancelAndSessionStaysUsable) {
  for (const char* policy : {"full", "snapkv"}) {
    struct P {
      uint64_t calls = 0, last_done = 0, total = 0;
      bool stop = true;
    } p;
    auto o = session_options(512, policy, std::strcmp(policy, "full") ? 32 : 0, 8);
    o.n_batch = 16;
    o.on_progress = [](uint64_t done, uint64_t total, void* user) {
      auto& pp = *static_cast<P*>(user);
      ++pp.calls, pp.last_done = done, pp.total = total;
      return pp.stop && done * 2 >= total ? 1 : 0;
    };
    o.progress_user_data = &p;
    snapvk_session* s = nullptr;
    ASSERT_EQ(snapvk_session_create(model(), &o, &s), SNAPVK_OK) << snapvk_last_error();
    const std::string prompt = story(6);
    EXPECT_EQ(snapvk_session_prefill_text(s, prompt.c_str()), SNAPVK_CANCELLED) << policy;
    p.stop = false;
    ASSERT_EQ(snapvk_session_prefill_text(s, prompt.c_str()), SNAPVK_OK) << snapvk_last_error();
    EXPECT_EQ(p.last_done, p.total);
    EXPECT_GT(p.calls, 2u);
    Collected c;
    ASSERT_EQ(snapvk_session_generate(s, nullptr, 16, collect, &c, nullptr), SNAPVK_OK) << snapvk_last_error();
    snapvk_session_free(s);
    o.on_progress = nullptr;
    EXPECT_EQ(c.tokens, run_greedy(model(), o, prompt, 16)) << policy;
  }
}

TEST_F(ApiTest, TimedOutDeviceReportsDeviceErrorsAndOthersGoOn) {
  // GPU work outlives the fence timeout: that device becomes unusable; nothing crashes or hangs.
  setenv("SNAPVK_FENCE_TIMEOUT_S", "0.000001", 1);
  snapvk_device* d = nullptr;
  const snapvk_status created = snapvk_device_create(nullptr, &d);
  unsetenv("SNAPVK_FENCE_TIMEOUT_S");
  ASSERT_EQ(created, SNAPVK_OK) << snapvk_last_error();
  snapvk_model* m = nullptr;
  snapvk_session* s = nullptr;
  // Where uploads go through the GPU the load itself times out; else the first prefill does.
  snapvk_status st = snapvk_model_load(d, model_path("stories260K.gguf").c_str(), nullptr, &m);
  if (st == SNAPVK_OK) {
    const snapvk_session_options o = session_options(512);
    st = snapvk_session_create(m, &o, &s);
    if (st == SNAPVK_OK) st = snapvk_session_prefill_text(s, story(3).c_str());
  }
  EXPECT_EQ(st, SNAPVK_DEVICE) << snapvk_last_error();
  EXPECT_NE(std::string(snapvk_last_error()).find("did not finish within 1e-06 s"), std::string::npos)
      << snapvk_last_error();
  if (s) {
    EXPECT_EQ(snapvk_session_prefill_text(s, "Once"), SNAPVK_DEVICE);
    EXPECT_NE(std::string(snapvk_last_error()).find("unusable after GPU work timed out"), std::string::npos)
        << snapvk_last_error();
  }
  snapvk_session_free(s);
  snapvk_model_free(m);
  snapvk_device_free(d);
  // The suite's device and model are unaffected.
  EXPECT_EQ(run_greedy(model(), session_options(64), "Once upon a time", 4).size(), 4u);
}

TEST_F(ApiTest, EveryFunctionRejectsNullAndInvalidArguments) {
  snapvk_session* s = nullptr;
  const auto so = session_options(128);
  ASSERT_EQ(snapvk_session_create(model(), &so, &s), SNAPVK_OK) << snapvk_last_error();
  int checked = 0;
  auto expect_invalid = [&](snapvk_status st, const char* call) {
    EXPECT_EQ(st, SNAPVK_INVALID_ARGUMENT) << call;
    EXPECT_GT(std::strlen(snapvk_last_error()), 0u) << call;
    ++checked;
  };
  snapvk_device_info di{};
  di.struct_size = sizeof di;
  snapvk_device_memory dm{};
  dm.struct_size = sizeof dm;
  snapvk_model_info mi{};
  mi.struct_size = sizeof mi;
  snapvk_kv_stats ks{};
  ks.struct_size = sizeof ks;
  snapvk_device* d = nullptr;
  snapvk_model* m = nullptr;
  snapvk_session* s2 = nullptr;
  int32_t tokens[4] = {1, 2, 3, 4};
  size_t n = 0;
  char text[8];
  const float* logits = nullptr;

  expect_invalid(snapvk_set_log_level(42), "set_log_level(42)");
  expect_invalid(snapvk_device_count(nullptr), "device_count(NULL)");
  expect_invalid(snapvk_device_describe(0, nullptr), "device_describe(NULL)");
  expect_invalid(snapvk_device_create(nullptr, nullptr), "device_create(out NULL)");
  snapvk_device_options bad_dopt{};  // struct_size 0
  expect_invalid(snapvk_device_create(&bad_dopt, &d), "device_create(struct_size 0)");
  EXPECT_EQ(d, nullptr);
  expect_invalid(snapvk_device_get_info(nullptr, &di), "device_get_info(NULL)");
  expect_invalid(snapvk_device_get_info(device(), nullptr), "device_get_info(info NULL)");
  snapvk_device_info zero_info{};
  expect_invalid(snapvk_device_get_info(device(), &zero_info), "device_get_info(struct_size 0)");
  expect_invalid(snapvk_device_get_memory(nullptr, &dm), "device_get_memory(NULL)");
  expect_invalid(snapvk_device_get_memory(device(), nullptr), "device_get_memory(memory NULL)");
  expect_invalid(snapvk_model_load(nullptr, "x.gguf", nullptr, &m), "model_load(device NULL)");
  expect_invalid(snapvk_model_load(device(), nullptr, nullptr, &m), "model_load(path NULL)");
  expect_invalid(snapvk_model_load(device(), "", nullptr, &m), "model_load(path empty)");
  expect_invalid(snapvk_model_load(device(), "x.gguf", nullptr, nullptr), "model_load(out NULL)");
  snapvk_model_options mopt{};
  mopt.struct_size = sizeof mopt;
  mopt.flags = 1;
  expect_invalid(snapvk_model_load(device(), model_path("stories260K.gguf").c_str(), &mopt, &m), "model_load(flags)");
  EXPECT_EQ(m, nullptr);
  expect_invalid(snapvk_model_get_info(nullptr, &mi), "model_get_info(NULL)");
  expect_invalid(snapvk_model_get_info(model(), nullptr), "model_get_info(info NULL)");
  expect_invalid(snapvk_tokenize(nullptr, "x", 0, tokens, 4, &n), "tokenize(model NULL)");
  expect_invalid(snapvk_tokenize(model(), nullptr, 0, tokens, 4, &n), "tokenize(text NULL)");
  expect_invalid(snapvk_tokenize(model(), "x", 0, tokens, 4, nullptr), "tokenize(n NULL)");
  expect_invalid(snapvk_tokenize(model(), "x", 0, nullptr, 4, &n), "tokenize(tokens NULL, capacity 4)");
  expect_invalid(snapvk_tokenize(model(), "x", 64, tokens, 4, &n), "tokenize(flags)");
  expect_invalid(snapvk_detokenize(nullptr, tokens, 1, 0, text, 8, &n), "detokenize(model NULL)");
  expect_invalid(snapvk_detokenize(model(), nullptr, 1, 0, text, 8, &n), "detokenize(tokens NULL)");
  expect_invalid(snapvk_detokenize(model(), tokens, 1, 0, nullptr, 8, &n), "detokenize(text NULL, capacity 8)");
  expect_invalid(snapvk_detokenize(model(), tokens, 1, 0, text, 8, nullptr), "detokenize(length NULL)");
  expect_invalid(snapvk_detokenize(model(), tokens, 1, 64, text, 8, &n), "detokenize(flags)");
  const int32_t bad_id = 512;
  expect_invalid(snapvk_detokenize(model(), &bad_id, 1, 0, text, 8, &n), "detokenize(id 512)");
  expect_invalid(snapvk_session_create(nullptr, &so, &s2), "session_create(model NULL)");
  expect_invalid(snapvk_session_create(model(), &so, nullptr), "session_create(out NULL)");
  snapvk_session_options bad = so;
  bad.struct_size = 0;
  expect_invalid(snapvk_session_create(model(), &bad, &s2), "session_create(struct_size 0)");
  bad = so, bad.kv_policy_name = "lru";
  expect_invalid(snapvk_session_create(model(), &bad, &s2), "session_create(policy lru)");
  bad = so, bad.kv_policy_name = nullptr, bad.kv_policy = 9;
  expect_invalid(snapvk_session_create(model(), &bad, &s2), "session_create(policy 9)");
  bad = so, bad.kv_type = 17;
  expect_invalid(snapvk_session_create(model(), &bad, &s2), "session_create(kv_type 17)");
  bad = so, bad.kv_type = SNAPVK_KV_TYPE_Q8_0;  // head_dim 8
  expect_invalid(snapvk_session_create(model(), &bad, &s2), "session_create(q8_0, head_dim 8)");
  bad = so, bad.kv_budget = 64;
  expect_invalid(snapvk_session_create(model(), &bad, &s2), "session_create(full with budget)");
  bad = session_options(128, "snapkv", 16, 16);
  expect_invalid(snapvk_session_create(model(), &bad, &s2), "session_create(window >= budget)");
  bad = session_options(128, "snapkv");
  expect_invalid(snapvk_session_create(model(), &bad, &s2), "session_create(snapkv without budget)");
  bad = session_options(128, "snapkv"), bad.kv_ratio = 1.5f;
  expect_invalid(snapvk_session_create(model(), &bad, &s2), "session_create(ratio 1.5)");
  bad = session_options(128, "snapkv", 32), bad.kv_kernel = 4;
  expect_invalid(snapvk_session_create(model(), &bad, &s2), "session_create(even kernel)");
  bad = session_options(128, "snapkv", 32), bad.kv_pool = 3;
  expect_invalid(snapvk_session_create(model(), &bad, &s2), "session_create(pool 3)");
  bad = session_options(128, "snapkv", 32), bad.kv_pool_ahead = -2;
  expect_invalid(snapvk_session_create(model(), &bad, &s2), "session_create(pool_ahead -2)");
  bad = session_options(128, "snapkv", 32), bad.kv_complete_words = -2;
  expect_invalid(snapvk_session_create(model(), &bad, &s2), "session_create(complete_words -2)");
  bad = session_options(128, "snapkv", 32), bad.kv_gqa = -1;
  expect_invalid(snapvk_session_create(model(), &bad, &s2), "session_create(gqa -1)");
  EXPECT_EQ(s2, nullptr);
  expect_invalid(snapvk_session_prefill_text(nullptr, "x"), "prefill_text(NULL)");
  expect_invalid(snapvk_session_prefill_text(s, nullptr), "prefill_text(text NULL)");
  expect_invalid(snapvk_session_prefill_tokens(nullptr, tokens, 1), "prefill_tokens(NULL)");
  expect_invalid(snapvk_session_prefill_tokens(s, nullptr, 1), "prefill_tokens(tokens NULL)");
  expect_invalid(snapvk_session_prefill_tokens(s, tokens, 0), "prefill_tokens(0 tokens)");
  expect_invalid(snapvk_session_prefill_tokens(s, &bad_id, 1), "prefill_tokens(id 512)");
  expect_invalid(snapvk_session_generate(nullptr, nullptr, 1, nullptr, nullptr, nullptr), "generate(NULL)");
  expect_invalid(snapvk_session_generate(s, nullptr, 1, nullptr, nullptr, nullptr), "generate(empty session)");
  expect_invalid(snapvk_session_get_logits(nullptr, &logits, &n), "get_logits(NULL)");
  expect_invalid(snapvk_session_get_logits(s, nullptr, &n), "get_logits(logits NULL)");
  expect_invalid(snapvk_session_get_logits(s, &logits, nullptr), "get_logits(n NULL)");
  expect_invalid(snapvk_session_get_kv_stats(nullptr, &ks), "get_kv_stats(NULL)");
  expect_invalid(snapvk_session_get_kv_stats(s, nullptr), "get_kv_stats(stats NULL)");
  expect_invalid(snapvk_session_reset(nullptr), "reset(NULL)");
  expect_invalid(snapvk_session_cancel(nullptr), "cancel(NULL)");

  ASSERT_EQ(snapvk_session_prefill_tokens(s, tokens, 2), SNAPVK_OK) << snapvk_last_error();
  EXPECT_STREQ(snapvk_last_error(), "") << "success clears the message";
  snapvk_sampling_params sp{};
  sp.struct_size = sizeof sp;
  sp.temperature = std::nanf("");
  expect_invalid(snapvk_session_generate(s, &sp, 1, nullptr, nullptr, nullptr), "generate(NaN temperature)");
  sp.temperature = 0, sp.top_p = -1;
  expect_invalid(snapvk_session_generate(s, &sp, 1, nullptr, nullptr, nullptr), "generate(top_p -1)");
  sp.top_p = 0, sp.repeat_last_n = -2;
  expect_invalid(snapvk_session_generate(s, &sp, 1, nullptr, nullptr, nullptr), "generate(repeat_last_n -2)");
  snapvk_generate_result zero_result{};
  expect_invalid(snapvk_session_generate(s, nullptr, 1, nullptr, nullptr, &zero_result), "generate(result size 0)");
  EXPECT_GE(checked, 60);

  // The free functions accept NULL.
  snapvk_session_free(nullptr);
  snapvk_model_free(nullptr);
  snapvk_device_free(nullptr);
  snapvk_session_free(s);
}

TEST_F(ApiTest, BadModelFilesGiveIoOrBadModel) {
  snapvk_model* m = nullptr;
  EXPECT_EQ(snapvk_model_load(device(), "/nonexistent/model.gguf", nullptr, &m), SNAPVK_IO);
  EXPECT_NE(std::string(snapvk_last_error()).find("/nonexistent/model.gguf"), std::string::npos) << snapvk_last_error();
  EXPECT_EQ(snapvk_model_load(device(), models_dir().string().c_str(), nullptr, &m), SNAPVK_IO) << snapvk_last_error();
  // Not a GGUF file at all, and a GGUF that holds only a vocabulary.
  EXPECT_EQ(snapvk_model_load(device(), model_path("tok512.bin").c_str(), nullptr, &m), SNAPVK_BAD_MODEL)
      << snapvk_last_error();
  EXPECT_GT(std::strlen(snapvk_last_error()), 0u);
  EXPECT_EQ(snapvk_model_load(device(), model_path("ggml-vocab-llama-spm.gguf").c_str(), nullptr, &m), SNAPVK_BAD_MODEL)
      << snapvk_last_error();
  const auto empty = std::filesystem::temp_directory_path() / "snapvk_api_empty.gguf";
  std::ofstream(empty).close();
  EXPECT_EQ(snapvk_model_load(device(), empty.string().c_str(), nullptr, &m), SNAPVK_BAD_MODEL) << snapvk_last_error();
  std::filesystem::remove(empty);
  EXPECT_EQ(m, nullptr);
}

// Each kind of failure reaches the caller as its status: the kind is set where the error is
// thrown (runtime/error.h), not read from its message. An option's error names its field.
TEST_F(ApiTest, EachErrorKindReachesTheCallerAsItsStatus) {
  snapvk_model* m = nullptr;
  // IO from the GGUF reader itself, past the API's checks of the path: a character device.
  EXPECT_EQ(snapvk_model_load(device(), "/dev/null", nullptr, &m), SNAPVK_IO) << snapvk_last_error();
  EXPECT_NE(std::string(snapvk_last_error()).find("not a regular file"), std::string::npos) << snapvk_last_error();
  // BAD_MODEL: a GGUF cut short.
  std::string head(4096, '\0');
  std::ifstream(model_path("stories260K.gguf"), std::ios::binary).read(head.data(), std::streamsize(head.size()));
  const auto cut = std::filesystem::temp_directory_path() / ("snapvk_api_cut_" + std::to_string(getpid()) + ".gguf");
  std::ofstream(cut, std::ios::binary) << head;
  EXPECT_EQ(snapvk_model_load(device(), cut.string().c_str(), nullptr, &m), SNAPVK_BAD_MODEL) << snapvk_last_error();
  EXPECT_NE(std::string(snapvk_last_error()).find("past end of file"), std::string::npos) << snapvk_last_error();
  std::filesystem::remove(cut);
  // OUT_OF_MEMORY: a device budget smaller than the model's weights.
  snapvk_device_options small{};
  small.struct_size = sizeof small;
  small.max_device_memory = 64 * 1024;
  snapvk_device* d = nullptr;
  ASSERT_EQ(snapvk_device_create(&small, &d), SNAPVK_OK) << snapvk_last_error();
  EXPECT_EQ(snapvk_model_load(d, model_path("stories260K.gguf").c_str(), nullptr, &m), SNAPVK_OUT_OF_MEMORY)
      << snapvk_last_error();
  EXPECT_NE(std::string(snapvk_last_error()).find("budget"), std::string::npos) << snapvk_last_error();
  snapvk_device_free(d);
  EXPECT_EQ(m, nullptr);
  // DEVICE: no device of that name.
  snapvk_device_options named{};
  named.struct_size = sizeof named;
  named.device = "no-such-gpu-xyz";
  d = nullptr;
  EXPECT_EQ(snapvk_device_create(&named, &d), SNAPVK_DEVICE) << snapvk_last_error();
  EXPECT_NE(std::string(snapvk_last_error()).find("no Vulkan device matches"), std::string::npos)
      << snapvk_last_error();
  EXPECT_EQ(d, nullptr);
  // INVALID_ARGUMENT, with the field of snapvk_session_options to change.
  snapvk_session* s = nullptr;
  auto o = session_options(128, "snapkv", 16, 32);
  EXPECT_EQ(snapvk_session_create(model(), &o, &s), SNAPVK_INVALID_ARGUMENT);
  EXPECT_NE(std::string(snapvk_last_error())
                .find("the KV window (32) must be smaller than the KV budget (16); the budget includes the window "
                      "(snapvk_session_options.kv_window)"),
            std::string::npos)
      << snapvk_last_error();
  EXPECT_EQ(s, nullptr);
  o = session_options(16);
  ASSERT_EQ(snapvk_session_create(model(), &o, &s), SNAPVK_OK) << snapvk_last_error();
  EXPECT_EQ(snapvk_session_prefill_text(s, story(3).c_str()), SNAPVK_INVALID_ARGUMENT);
  EXPECT_NE(std::string(snapvk_last_error()).find("does not fit the context"), std::string::npos)
      << snapvk_last_error();
  EXPECT_NE(std::string(snapvk_last_error()).find("(snapvk_session_options.n_ctx)"), std::string::npos)
      << snapvk_last_error();
  snapvk_session_free(s);
  // CANCELLED: CancelRequestedWhileIdleStopsTheNextCallAndResetDropsIt and the tests around it.
}

TEST_F(ApiTest, OverBudgetSessionIsRefusedAndOthersAreUnharmed) {
  const std::string path = model_path("stories260K.gguf");
  const std::string prompt = story(2);
  const auto small = session_options(128);
  const auto large = session_options(2048);
  const auto expected = run_greedy(model(), small, prompt, 24);
  ASSERT_EQ(expected.size(), 24u);
  // What the model and one small session take, measured on a device without a budget.
  uint64_t needed = 0;
  {
    snapvk_device* d = nullptr;
    ASSERT_EQ(snapvk_device_create(nullptr, &d), SNAPVK_OK) << snapvk_last_error();
    snapvk_model* m = nullptr;
    ASSERT_EQ(snapvk_model_load(d, path.c_str(), nullptr, &m), SNAPVK_OK) << snapvk_last_error();
    snapvk_session* s = nullptr;
    ASSERT_EQ(snapvk_session_create(m, &small, &s), SNAPVK_OK) << snapvk_last_error();
    snapvk_device_memory mem{};
    mem.struct_size = sizeof mem;
    ASSERT_EQ(snapvk_device_get_memory(d, &mem), SNAPVK_OK);
    needed = mem.in_use_bytes;
    snapvk_session_free(s);
    snapvk_model_free(m);
    snapvk_device_free(d);
  }
  snapvk_device_options dopt{};
  dopt.struct_size = sizeof dopt;
  dopt.max_device_memory = needed + 64 * 1024;
  snapvk_device* d = nullptr;
  ASSERT_EQ(snapvk_device_create(&dopt, &d), SNAPVK_OK) << snapvk_last_error();
  snapvk_model* m = nullptr;
  ASSERT_EQ(snapvk_model_load(d, path.c_str(), nullptr, &m), SNAPVK_OK) << snapvk_last_error();
  snapvk_session* a = nullptr;
  ASSERT_EQ(snapvk_session_create(m, &small, &a), SNAPVK_OK) << snapvk_last_error();
  ASSERT_EQ(snapvk_session_prefill_text(a, prompt.c_str()), SNAPVK_OK) << snapvk_last_error();
  Collected c;
  ASSERT_EQ(snapvk_session_generate(a, nullptr, 16, collect, &c, nullptr), SNAPVK_OK) << snapvk_last_error();

  snapvk_device_memory before{};
  before.struct_size = sizeof before;
  ASSERT_EQ(snapvk_device_get_memory(d, &before), SNAPVK_OK);
  snapvk_session* b = nullptr;
  EXPECT_EQ(snapvk_session_create(m, &large, &b), SNAPVK_OUT_OF_MEMORY);
  EXPECT_NE(std::string(snapvk_last_error()).find("budget"), std::string::npos) << snapvk_last_error();
  EXPECT_EQ(b, nullptr);
  // A compressed session is checked again when its prompt arrives: too long a prompt for the
  // budget is refused then, before anything is allocated for it.
  auto snap = session_options(2048, "snapkv", 64, 8);
  snap.n_batch = 16;
  snapvk_session* c2 = nullptr;
  const snapvk_status st = snapvk_session_create(m, &snap, &c2);
  if (st == SNAPVK_OK) {
    const std::string huge = story(90);  // ~1900 tokens
    EXPECT_EQ(snapvk_session_prefill_text(c2, huge.c_str()), SNAPVK_OUT_OF_MEMORY) << snapvk_last_error();
    EXPECT_NE(std::string(snapvk_last_error()).find("budget"), std::string::npos) << snapvk_last_error();
    snapvk_kv_stats ks{};
    ks.struct_size = sizeof ks;
    ASSERT_EQ(snapvk_session_get_kv_stats(c2, &ks), SNAPVK_OK);
    EXPECT_EQ(ks.n_past, 0u);
  } else {
    EXPECT_EQ(st, SNAPVK_OUT_OF_MEMORY) << snapvk_last_error();
  }
  snapvk_session_free(c2);
  snapvk_device_memory after{};
  after.struct_size = sizeof after;
  ASSERT_EQ(snapvk_device_get_memory(d, &after), SNAPVK_OK);
  EXPECT_EQ(after.in_use_bytes, before.in_use_bytes) << "refused sessions leave nothing allocated";
  EXPECT_EQ(after.budget_bytes, dopt.max_device_memory);
  EXPECT_LE(after.peak_bytes, after.budget_bytes);
  // The session that fits goes on as on an unlimited device.
  ASSERT_EQ(snapvk_session_generate(a, nullptr, 8, collect, &c, nullptr), SNAPVK_OK) << snapvk_last_error();
  EXPECT_EQ(c.tokens, expected);
  snapvk_session_free(a);
  EXPECT_EQ(validation_errors(d), 0u);
  snapvk_model_free(m);
  snapvk_device_free(d);
}

TEST_F(ApiTest, ContextLimitsAreReported) {
  const auto o = session_options(32);
  snapvk_session* s = nullptr;
  ASSERT_EQ(snapvk_session_create(model(), &o, &s), SNAPVK_OK) << snapvk_last_error();
  const std::string long_prompt = story(3);
  EXPECT_EQ(snapvk_session_prefill_text(s, long_prompt.c_str()), SNAPVK_INVALID_ARGUMENT);
  EXPECT_NE(std::string(snapvk_last_error()).find("context"), std::string::npos) << snapvk_last_error();
  ASSERT_EQ(snapvk_session_prefill_text(s, "Once upon a time"), SNAPVK_OK) << snapvk_last_error();
  snapvk_generate_result r{};
  r.struct_size = sizeof r;
  ASSERT_EQ(snapvk_session_generate(s, nullptr, 0, nullptr, nullptr, &r), SNAPVK_OK) << snapvk_last_error();
  snapvk_kv_stats st{};
  st.struct_size = sizeof st;
  ASSERT_EQ(snapvk_session_get_kv_stats(s, &st), SNAPVK_OK);
  if (r.stop_reason == SNAPVK_STOP_CONTEXT_FULL)
    EXPECT_EQ(st.n_past, 32u);
  else
    EXPECT_EQ(r.stop_reason, SNAPVK_STOP_END_OF_GENERATION);
  EXPECT_EQ(st.n_past, st.prompt_len + r.n_tokens + 5u) << "5 prompt tokens with BOS";
  snapvk_session_free(s);
}

TEST_F(ApiTest, CallbacksMayReadTheSessionButNotChangeIt) {
  const auto o = session_options(256, "snapkv", 32, 8);
  snapvk_session* s = nullptr;
  ASSERT_EQ(snapvk_session_create(model(), &o, &s), SNAPVK_OK) << snapvk_last_error();
  const std::string prompt = story(4);
  ASSERT_EQ(snapvk_session_prefill_text(s, prompt.c_str()), SNAPVK_OK) << snapvk_last_error();
  struct Seen {
    snapvk_session* s;
    std::vector<uint32_t> n_past;
    std::vector<snapvk_status> changes;
  } seen{s, {}, {}};
  auto on_token = [](int32_t, const char*, void* user) {
    auto& sn = *static_cast<Seen*>(user);
    snapvk_kv_stats st{};
    st.struct_size = sizeof st;
    if (snapvk_session_get_kv_stats(sn.s, &st) == SNAPVK_OK) sn.n_past.push_back(st.n_past);
    const float* logits = nullptr;
    size_t n = 0;
    if (snapvk_session_get_logits(sn.s, &logits, &n) != SNAPVK_OK || n != 512) sn.n_past.push_back(0);
    sn.changes.push_back(snapvk_session_prefill_text(sn.s, "x"));
    sn.changes.push_back(snapvk_session_reset(sn.s));
    return 0;
  };
  ASSERT_EQ(snapvk_session_generate(s, nullptr, 4, on_token, &seen, nullptr), SNAPVK_OK) << snapvk_last_error();
  ASSERT_EQ(seen.n_past.size(), 4u);
  for (size_t i = 1; i < 4; ++i) EXPECT_EQ(seen.n_past[i], seen.n_past[0] + i);
  for (snapvk_status st : seen.changes) EXPECT_EQ(st, SNAPVK_INVALID_ARGUMENT);
  snapvk_session_free(s);
}

TEST_F(ApiTest, TokenizeAndDetokenizeWithCallerBuffers) {
  const char* text = "Once upon a time";
  size_t n = 0;
  ASSERT_EQ(snapvk_tokenize(model(), text, SNAPVK_TOKENIZE_ADD_SPECIAL, nullptr, 0, &n), SNAPVK_OK);
  ASSERT_GT(n, 2u);
  std::vector<int32_t> ids(n);
  size_t got = 0;
  EXPECT_EQ(snapvk_tokenize(model(), text, SNAPVK_TOKENIZE_ADD_SPECIAL, ids.data(), n - 1, &got),
            SNAPVK_BUFFER_TOO_SMALL);
  EXPECT_EQ(got, n);
  ASSERT_EQ(snapvk_tokenize(model(), text, SNAPVK_TOKENIZE_ADD_SPECIAL, ids.data(), n, &got), SNAPVK_OK);
  EXPECT_EQ(ids[0], 1) << "BOS";
  size_t len = 0;
  ASSERT_EQ(snapvk_detokenize(model(), ids.data(), ids.size(), SNAPVK_DETOKENIZE_STRIP_SPACE, nullptr, 0, &len),
            SNAPVK_OK);
  EXPECT_EQ(len, std::strlen(text));
  std::string out(len, '\0');
  EXPECT_EQ(snapvk_detokenize(model(), ids.data(), ids.size(), SNAPVK_DETOKENIZE_STRIP_SPACE, out.data(), len, &len),
            SNAPVK_BUFFER_TOO_SMALL)
      << "no room for the NUL";
  out.resize(len + 1);
  ASSERT_EQ(
      snapvk_detokenize(model(), ids.data(), ids.size(), SNAPVK_DETOKENIZE_STRIP_SPACE, out.data(), out.size(), &len),
      SNAPVK_OK);
  EXPECT_STREQ(out.c_str(), text);
  // Feeding the same tokens equals feeding the text (BOS added for an empty session).
  const auto o = session_options(128);
  snapvk_session* a = nullptr;
  snapvk_session* b = nullptr;
  ASSERT_EQ(snapvk_session_create(model(), &o, &a), SNAPVK_OK);
  ASSERT_EQ(snapvk_session_create(model(), &o, &b), SNAPVK_OK);
  ASSERT_EQ(snapvk_session_prefill_text(a, text), SNAPVK_OK);
  ASSERT_EQ(snapvk_session_prefill_tokens(b, ids.data(), ids.size()), SNAPVK_OK);
  const float *la = nullptr, *lb = nullptr;
  size_t na = 0, nb = 0;
  ASSERT_EQ(snapvk_session_get_logits(a, &la, &na), SNAPVK_OK);
  ASSERT_EQ(snapvk_session_get_logits(b, &lb, &nb), SNAPVK_OK);
  ASSERT_EQ(na, nb);
  EXPECT_EQ(std::vector<float>(la, la + na), std::vector<float>(lb, lb + nb));
  snapvk_session_free(a);
  snapvk_session_free(b);
}

TEST_F(ApiTest, HandlesMayBeFreedInAnyOrder) {
  snapvk_device* d = nullptr;
  ASSERT_EQ(snapvk_device_create(nullptr, &d), SNAPVK_OK) << snapvk_last_error();
  snapvk_model* m = nullptr;
  ASSERT_EQ(snapvk_model_load(d, model_path("stories260K.gguf").c_str(), nullptr, &m), SNAPVK_OK);
  const auto o = session_options(64);
  snapvk_session* s = nullptr;
  ASSERT_EQ(snapvk_session_create(m, &o, &s), SNAPVK_OK);
  snapvk_device_free(d);
  snapvk_model_free(m);
  ASSERT_EQ(snapvk_session_prefill_text(s, "Once upon a time"), SNAPVK_OK) << snapvk_last_error();
  snapvk_generate_result r{};
  r.struct_size = sizeof r;
  EXPECT_EQ(snapvk_session_generate(s, nullptr, 8, nullptr, nullptr, &r), SNAPVK_OK) << snapvk_last_error();
  EXPECT_TRUE(r.n_tokens > 0 || r.stop_reason == SNAPVK_STOP_END_OF_GENERATION);
  snapvk_session_free(s);
}

TEST_F(ApiTest, LogCallbackReceivesLines) {
  struct Lines {
    std::vector<std::string> lines;
  } lines;
  ASSERT_EQ(snapvk_set_log_callback(
                [](int32_t level, const char* msg, void* user) {
                  if (level == SNAPVK_LOG_INFO) static_cast<Lines*>(user)->lines.push_back(msg);
                },
                &lines),
            SNAPVK_OK);
  ASSERT_EQ(snapvk_set_log_level(SNAPVK_LOG_INFO), SNAPVK_OK);
  snapvk_device* d = nullptr;
  EXPECT_EQ(snapvk_device_create(nullptr, &d), SNAPVK_OK) << snapvk_last_error();
  snapvk_device_free(d);
  EXPECT_EQ(snapvk_set_log_level(SNAPVK_LOG_WARN), SNAPVK_OK);
  EXPECT_EQ(snapvk_set_log_callback(nullptr, nullptr), SNAPVK_OK);
  bool device_line = false;
  for (const auto& l : lines.lines) device_line |= l.find("device") != std::string::npos;
  EXPECT_TRUE(device_line) << lines.lines.size() << " info lines";
}

// An application that uses spdlog itself keeps its own default logger: snapvk logs through a
// logger of its own (to the callback or stderr), and neither the application's spdlog calls
// nor snapvk's level functions reach the other.
TEST_F(ApiTest, ApplicationSpdlogDefaultLoggerIsUntouched) {
  ASSERT_NE(device(), nullptr);  // the C API has been used by now
  EXPECT_NE(spdlog::default_logger()->name(), "snapvk") << "the C API replaced spdlog's default logger";
  const auto previous = spdlog::default_logger();
  std::ostringstream app_out;
  auto app = std::make_shared<spdlog::logger>("app", std::make_shared<spdlog::sinks::ostream_sink_mt>(app_out));
  app->set_pattern("%v");
  spdlog::set_default_logger(app);
  spdlog::set_level(spdlog::level::off);  // every spdlog logger the application knows: not snapvk's

  struct Lines {
    std::mutex m;
    std::vector<std::string> lines;
  } lines;
  ASSERT_EQ(snapvk_set_log_callback(
                [](int32_t level, const char* msg, void* user) {
                  auto* l = static_cast<Lines*>(user);
                  std::lock_guard<std::mutex> lock(l->m);
                  if (level == SNAPVK_LOG_INFO) l->lines.push_back(msg);
                },
                &lines),
            SNAPVK_OK);
  ASSERT_EQ(snapvk_set_log_level(SNAPVK_LOG_INFO), SNAPVK_OK);
  snapvk_device* d = nullptr;
  EXPECT_EQ(snapvk_device_create(nullptr, &d), SNAPVK_OK) << snapvk_last_error();
  snapvk_model* m = nullptr;
  EXPECT_EQ(snapvk_model_load(d, model_path("stories260K.gguf").c_str(), nullptr, &m), SNAPVK_OK)
      << snapvk_last_error();
  snapvk_model_free(m);
  snapvk_device_free(d);
  EXPECT_EQ(spdlog::default_logger()->level(), spdlog::level::off)
      << "snapvk_set_log_level set the application's level";
  app->set_level(spdlog::level::info);
  spdlog::info("the application's line");
  EXPECT_EQ(snapvk_set_log_level(SNAPVK_LOG_WARN), SNAPVK_OK);
  EXPECT_EQ(snapvk_set_log_callback(nullptr, nullptr), SNAPVK_OK);

  EXPECT_EQ(spdlog::default_logger(), app) << "the application's default logger was replaced";
  EXPECT_EQ(app_out.str(), "the application's line\n") << "snapvk wrote to the application's logger";
  bool device_line = false, model_line = false;
  for (const auto& l : lines.lines) {
    device_line |= l.rfind("[snapvk info] device ", 0) == 0;
    model_line |= l.rfind("[snapvk info] model ", 0) == 0;
  }
  EXPECT_TRUE(device_line && model_line) << lines.lines.size() << " info lines reached the callback";
  spdlog::set_default_logger(previous);
  spdlog::set_level(spdlog::level::info);  // spdlog's own default level
}

// The C++ wrappers: a conversation whose first turn is compressed and whose later turns are
// appended after the compacted cache; errors as exceptions with their status.
TEST_F(ApiTest, CppChatTurnsAppendToTheCompressedCache) {
  snapvk::Device device;
  snapvk::Model model(device, model_path("stories260K.gguf"));
  EXPECT_EQ(model.info().n_vocab, 512u);
  snapvk::SessionOptions so;
  so.n_ctx = 512;
  so.kv_policy = SNAPVK_KV_POLICY_SNAPKV;
  so.kv_budget = 48;
  so.kv_window = 8;
  uint64_t progress_calls = 0;
  snapvk::Session chat(model, so, [&](uint64_t, uint64_t) { return ++progress_calls > 0; });
  chat.prefill(story(6));
  EXPECT_GT(progress_calls, 0u);
  const auto first = chat.kv_stats();
  EXPECT_GT(first.ratio, 1.0);
  const uint32_t prompt_len = first.prompt_len;
  std::string text;
  auto r = chat.generate(24, [&](int32_t, std::string_view piece) { text += piece; });
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(chat.kv_stats().n_past, prompt_len + r.n_tokens);
  // Second turn: appended, not compressed again.
  chat.prefill(" Then her mom said:");
  const auto second = chat.kv_stats();
  EXPECT_EQ(second.prompt_len, prompt_len);
  EXPECT_GT(second.n_past, prompt_len + r.n_tokens);
  EXPECT_GT(second.retained_bytes, first.retained_bytes);
  EXPECT_GT(second.ratio, 1.0);
  const std::string more = chat.generate_text(16);
  EXPECT_GT(chat.kv_stats().n_past, second.n_past);
  // Stopping from the lambda, and exceptions thrown by it reach the caller.
  int seen = 0;
  r = chat.generate(10, [&](int32_t, std::string_view) { return ++seen < 2; });
  EXPECT_EQ(r.stop_reason, SNAPVK_STOP_CALLBACK);
  EXPECT_EQ(r.n_tokens, 2u);
  EXPECT_THROW(chat.generate(4, [](int32_t, std::string_view) -> void { throw std::logic_error("mine"); }),
               std::logic_error);
  chat.reset();
  EXPECT_EQ(chat.kv_stats().n_past, 0u);
  try {
    chat.generate(1);
    ADD_FAILURE() << "generate on an empty session";
  } catch (const snapvk::Error& e) {
    EXPECT_EQ(e.status(), SNAPVK_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("prefill"), std::string::npos) << e.what();
  }
  try {
    snapvk::Model bad(device, "/nonexistent.gguf");
    ADD_FAILURE() << "loaded a missing file";
  } catch (const snapvk::Error& e) {
    EXPECT_EQ(e.status(), SNAPVK_IO);
  }
  const auto ids = model.tokenize("Once upon a time");
  EXPECT_EQ(model.detokenize(ids, SNAPVK_DETOKENIZE_STRIP_SPACE), "Once upon a time");
  EXPECT_FALSE(snapvk::Device::list().empty());
  EXPECT_EQ(device.memory().validation_errors, 0u);
}

// The session options pass the same checks as the host's: hostile numbers are a clear
// SNAPVK_INVALID_ARGUMENT naming the field, and a prefill length that would wrap is refused.
TEST_F(ApiTest, SessionOptionsAreChecked) {
  auto create = [&](const std::function<void(snapvk_session_options&)>& edit, const std::string& what) {
    snapvk_session_options o{};
    o.struct_size = sizeof o;
    o.n_ctx = 64;
    edit(o);
    snapvk_session* s = nullptr;
    EXPECT_EQ(snapvk_session_create(model(), &o, &s), SNAPVK_INVALID_ARGUMENT) << what;
    EXPECT_EQ(s, nullptr);
    EXPECT_NE(std::string(snapvk_last_error()).find(what), std::string::npos) << snapvk_last_error();
  };
  create([](snapvk_session_options& o) { o.n_ctx = kU32Max; }, "n_ctx 4294967295 is out of range");
  create([](snapvk_session_options& o) { o.kv_policy_name = "snapkv", o.kv_budget = kU32Max; },
         "KV budget 4294967295 is too large (at most 16777216) (snapvk_session_options.kv_budget)");
  create([](snapvk_session_options& o) { o.kv_policy_name = "snapkv", o.kv_ratio = 0.5f, o.kv_window = kU32Max; },
         "KV window 4294967295 is too large (at most 16777216) (snapvk_session_options.kv_window)");
  snapvk_session_options o{};
  o.struct_size = sizeof o;
  o.n_ctx = 64;
  snapvk_session* s = nullptr;
  ASSERT_EQ(snapvk_session_create(model(), &o, &s), SNAPVK_OK) << snapvk_last_error();
  const int32_t one = 1;
  ASSERT_EQ(snapvk_session_prefill_tokens(s, &one, 1), SNAPVK_OK) << snapvk_last_error();
  EXPECT_EQ(snapvk_session_prefill_tokens(s, &one, std::numeric_limits<size_t>::max()), SNAPVK_INVALID_ARGUMENT);
  EXPECT_NE(std::string(snapvk_last_error()).find("does not fit the context"), std::string::npos)
      << snapvk_last_error();
  snapvk_session_free(s);
}

// ---- packs and endless chat (snapvk_session_save/load, to a file and to memory; kv_endless) ----

const char* kDoc = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. ";

// Sessions on the suite's model, and what the pack tests read back from them.
struct ApiPack : ApiTest {
  static snapvk_session* session(const char* policy, uint32_t budget, uint32_t endless = 0, uint32_t n_ctx = 256) {
    snapvk_session_options o = session_options(n_ctx, policy, budget, budget ? 8 : 0);
    o.kv_type = SNAPVK_KV_TYPE_F32;
    o.kv_endless = endless;
    snapvk_session* s = nullptr;
    EXPECT_EQ(snapvk_session_create(model(), &o, &s), SNAPVK_OK) << snapvk_last_error();
    return s;
  }
  static std::vector<float> logits(snapvk_session* s) {
    const float* p = nullptr;
    size_t n = 0;
    EXPECT_EQ(snapvk_session_get_logits(s, &p, &n), SNAPVK_OK) << snapvk_last_error();
    return std::vector<float>(p, p + n);
  }
  static std::vector<int32_t> greedy(snapvk_session* s, uint32_t n) {
    snapvk_sampling_params p{};
    p.struct_size = sizeof p;
    std::vector<int32_t> out;
    auto on = [](int32_t t, const char*, void* u) {
      static_cast<std::vector<int32_t>*>(u)->push_back(t);
      return 0;
    };
    EXPECT_EQ(snapvk_session_generate(s, &p, n, on, &out, nullptr), SNAPVK_OK) << snapvk_last_error();
    return out;
  }
};

TEST_F(ApiPack, SaveAndLoadThroughMemoryAndFilesGiveTheSameAnswer) {
  for (const char* policy : {"full", "snapkv"}) {
    SCOPED_TRACE(policy);
    const uint32_t budget = std::string(policy) == "full" ? 0 : 16;
    snapvk_session* a = session(policy, budget);
    ASSERT_EQ(snapvk_session_prefill_text(a, kDoc), SNAPVK_OK) << snapvk_last_error();
    size_t size = 0;
    ASSERT_EQ(snapvk_session_save_to_memory(a, nullptr, 0, &size), SNAPVK_OK) << snapvk_last_error();
    std::vector<uint8_t> bytes(size);
    EXPECT_EQ(snapvk_session_save_to_memory(a, bytes.data(), size - 1, &size), SNAPVK_BUFFER_TOO_SMALL);
    ASSERT_EQ(snapvk_session_save_to_memory(a, bytes.data(), bytes.size(), &size), SNAPVK_OK) << snapvk_last_error();
    const std::string path =
        (std::filesystem::temp_directory_path() / ("snapvk_api_" + std::to_string(::getpid()) + ".svkv")).string();
    ASSERT_EQ(snapvk_session_save(a, path.c_str()), SNAPVK_OK) << snapvk_last_error();

    ASSERT_EQ(snapvk_session_prefill_text(a, " One day"), SNAPVK_OK);
    const std::vector<float> expected = logits(a);
    const std::vector<int32_t> answer = greedy(a, 10);

    snapvk_session* b = session(policy, budget);
    ASSERT_EQ(snapvk_session_load_from_memory(b, bytes.data(), bytes.size()), SNAPVK_OK) << snapvk_last_error();
    ASSERT_EQ(snapvk_session_prefill_text(b, " One day"), SNAPVK_OK);
    EXPECT_EQ(std::memcmp(logits(b).data(), expected.data(), expected.size() * 4), 0);
    EXPECT_EQ(greedy(b, 10), answer);

    snapvk_session* c = session(policy, budget);
    ASSERT_EQ(snapvk_session_load(c, path.c_str()), SNAPVK_OK) << snapvk_last_error();
    ASSERT_EQ(snapvk_session_prefill_text(c, " One day"), SNAPVK_OK);
    EXPECT_EQ(greedy(c, 10), answer);
    std::filesystem::remove(path);

    // a bad pack: SNAPVK_INVALID_ARGUMENT, the session as it was
    bytes[bytes.size() / 2] ^= 1;
    snapvk_kv_stats st{};
    st.struct_size = sizeof st;
    ASSERT_EQ(snapvk_session_get_kv_stats(c, &st), SNAPVK_OK);
    EXPECT_EQ(snapvk_session_load_from_memory(c, bytes.data(), bytes.size()), SNAPVK_INVALID_ARGUMENT);
    EXPECT_NE(std::string(snapvk_last_error()).find("checksum"), std::string::npos) << snapvk_last_error();
    const uint32_t n_past = st.n_past;
    ASSERT_EQ(snapvk_session_get_kv_stats(c, &st), SNAPVK_OK);
    EXPECT_EQ(st.n_past, n_past);
    EXPECT_EQ(snapvk_session_load(c, "/nonexistent/x.svkv"), SNAPVK_IO);
    snapvk_session_free(a), snapvk_session_free(b), snapvk_session_free(c);
  }
}

TEST_F(ApiPack, EmptySessionHasNothingToSave) {
  snapvk_session* s = session("full", 0);
  size_t size = 0;
  EXPECT_EQ(snapvk_session_save_to_memory(s, nullptr, 0, &size), SNAPVK_INVALID_ARGUMENT);
  snapvk_session_free(s);
}

TEST_F(ApiPack, EndlessChatStaysWithinItsBudget) {
  snapvk_session* s = session("snapkv", 32, 1, 80);
  snapvk_kv_stats st{};
  st.struct_size = sizeof st;
  uint64_t allocated = 0;
  for (int turn = 0; turn < 30; ++turn) {
    ASSERT_EQ(snapvk_session_prefill_text(s, " Lily went to the park."), SNAPVK_OK) << snapvk_last_error();
    snapvk_sampling_params p{};
    p.struct_size = sizeof p;
    snapvk_generate_result r{};
    r.struct_size = sizeof r;
    ASSERT_EQ(snapvk_session_generate(s, &p, 8, nullptr, nullptr, &r), SNAPVK_OK) << snapvk_last_error();
    // past n_ctx positions the answers go on: what fills up is the cache's rows
    EXPECT_NE(r.stop_reason, SNAPVK_STOP_CONTEXT_FULL) << "turn " << turn;
    ASSERT_EQ(snapvk_session_get_kv_stats(s, &st), SNAPVK_OK);
    if (turn == 0) allocated = st.allocated_bytes;
    EXPECT_EQ(st.allocated_bytes, allocated);
  }
  EXPECT_GT(st.n_past, 80u * 3);  // past n_ctx, and still going
  snapvk_session_free(s);
}

// ---- chat: templates into caller buffers, argument checks, a session that appends each turn ----
// stories260K has no chat template: ChatML by default.

snapvk_chat_message msg(const char* role, const char* content) {
  snapvk_chat_message m{};
  m.struct_size = sizeof m;
  m.role = role;
  m.content = content;
  return m;
}

// The C++ wrappers' own device and model, kept to the end as an application would.
struct ApiChat : ::testing::Test {
  static snapvk::Device& device() {
    static snapvk::Device* d = new snapvk::Device();
    return *d;
  }
  static snapvk::Model& model() {
    static snapvk::Model* m = new snapvk::Model(device(), model_path("stories260K.gguf"));
    return *m;
  }
  // The token ids of chatml_text(system, user), from the start of a conversation.
  static std::vector<int32_t> chatml_tokens(const std::string& system, const std::string& user) {
    return model().tokenize(chatml_text(system, user), SNAPVK_TOKENIZE_ADD_SPECIAL | SNAPVK_TOKENIZE_PARSE_SPECIAL);
  }
};

TEST_F(ApiChat, TemplateInfoAndRenderingIntoCallerBuffers) {
  const snapvk::ChatTemplateInfo info = model().chat_template();
  EXPECT_STREQ(info.name, "chatml");
  EXPECT_STREQ(info.source, "no tokenizer.chat_template; ChatML by default");
  EXPECT_EQ(info.has_default_system, 0u);
  const snapvk_chat_message msgs[] = {msg("system", "S"), msg("user", "Hi")};
  const std::string want = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
  size_t len = 0;
  ASSERT_EQ(snapvk_chat_apply_template(model().get(), msgs, 2, 1, nullptr, 0, &len), SNAPVK_OK) << snapvk_last_error();
  EXPECT_EQ(len, want.size());
  std::vector<char> buf(len + 1);
  EXPECT_EQ(snapvk_chat_apply_template(model().get(), msgs, 2, 1, buf.data(), len, &len), SNAPVK_BUFFER_TOO_SMALL);
  ASSERT_EQ(snapvk_chat_apply_template(model().get(), msgs, 2, 1, buf.data(), buf.size(), &len), SNAPVK_OK);
  EXPECT_EQ(std::string(buf.data()), want);
  EXPECT_EQ(model().apply_chat_template({{"system", "S"}, {"user", "Hi"}}), want);
  EXPECT_EQ(model().apply_chat_template({{"user", "Hi"}}, false), "<|im_start|>user\nHi<|im_end|>\n");
}

TEST_F(ApiChat, ArgumentsAreChecked) {
  snapvk_chat_message msgs[] = {msg("user", "Hi"), msg("assistant", "Yo")};
  size_t len = 0;
  EXPECT_EQ(snapvk_chat_apply_template(nullptr, msgs, 2, 1, nullptr, 0, &len), SNAPVK_INVALID_ARGUMENT);
  EXPECT_EQ(snapvk_chat_apply_template(model().get(), nullptr, 2, 1, nullptr, 0, &len), SNAPVK_INVALID_ARGUMENT);
  EXPECT_EQ(snapvk_chat_apply_template(model().get(), msgs, 2, 1, nullptr, 0, nullptr), SNAPVK_INVALID_ARGUMENT);
  EXPECT_EQ(snapvk_chat_apply_template(model().get(), msgs, 2, 1, nullptr, 8, &len), SNAPVK_INVALID_ARGUMENT);
  msgs[1].struct_size = 0;  // every element's struct_size is the stride
  EXPECT_EQ(snapvk_chat_apply_template(model().get(), msgs, 2, 1, nullptr, 0, &len), SNAPVK_INVALID_ARGUMENT);
  EXPECT_NE(std::string(snapvk_last_error()).find("messages[1].struct_size"), std::string::npos) << snapvk_last_error();
  msgs[1] = msg("assistant", nullptr);
  EXPECT_EQ(snapvk_chat_apply_template(model().get(), msgs, 2, 1, nullptr, 0, &len), SNAPVK_INVALID_ARGUMENT);
  EXPECT_EQ(snapvk_model_get_chat_template(model().get(), nullptr), SNAPVK_INVALID_ARGUMENT);
  EXPECT_EQ(snapvk_session_prefill_chat(nullptr, msgs, 1, 1), SNAPVK_INVALID_ARGUMENT);

  // A template by name when loading; an unknown name fails the load and lists the names.
  snapvk::ModelOptions mo;
  mo.chat_template = "gemma";
  EXPECT_STREQ(snapvk::Model(device(), model_path("stories260K.gguf"), mo).chat_template().name, "gemma");
  mo.chat_template = "nope";
  snapvk_model* bad = nullptr;
  EXPECT_EQ(snapvk_model_load(device().get(), model_path("stories260K.gguf").c_str(), &mo, &bad),
            SNAPVK_INVALID_ARGUMENT);
  EXPECT_EQ(bad, nullptr);
  EXPECT_NE(std::string(snapvk_last_error()).find("chatml, llama3, gemma"), std::string::npos) << snapvk_last_error();
}

TEST_F(ApiChat, SessionAppendsOnlyEachNewTurn) {
  snapvk::SessionOptions so;
  so.n_ctx = 512;
  snapvk::Session chat(model(), so);
  std::vector<snapvk::ChatMessage> m = {{"system", "S"}, {"user", "Hello"}};
  chat.prefill_chat(m);
  const auto first = chatml_tokens("S", "Hello");
  EXPECT_EQ(chat.kv_stats().n_past, first.size());
  std::string answer;
  const snapvk::GenerateResult g = chat.generate(6, [&](int32_t, std::string_view piece) { answer += piece; });
  const uint32_t held = chat.kv_stats().n_past;
  EXPECT_EQ(held, first.size() + g.n_tokens);

  // The next turn: only its text (the answer's end of turn, the user's turn, the assistant's opening).
  const snapvk_chat_message old[] = {msg("system", "S"), msg("user", "Hello")};
  EXPECT_EQ(snapvk_session_prefill_chat(chat.get(), old, 2, 1), SNAPVK_INVALID_ARGUMENT);  // the answer is missing
  m.push_back({"assistant", answer});
  m.push_back({"user", "More"});
  chat.prefill_chat(m);
  const auto turn = model().tokenize("<|im_end|>\n<|im_start|>user\nMore<|im_end|>\n<|im_start|>assistant\n",
                                     SNAPVK_TOKENIZE_PARSE_SPECIAL);
  EXPECT_EQ(chat.kv_stats().n_past, held + turn.size());
  EXPECT_THROW(chat.prefill_chat(m), snapvk::Error);  // nothing new
  const snapvk_chat_message edited[] = {msg("system", "T"), msg("user", "Hello")};
  EXPECT_EQ(snapvk_session_prefill_chat(chat.get(), edited, 2, 1), SNAPVK_INVALID_ARGUMENT);
  EXPECT_NE(std::string(snapvk_last_error()).find("do not continue the conversation"), std::string::npos);

  // A plain prompt in between breaks the chat until a reset.
  chat.prefill(std::string(" and"));
  m.push_back({"assistant", ""});
  m.push_back({"user", "Again"});
  EXPECT_THROW(chat.prefill_chat(m), snapvk::Error);
  chat.reset();
  chat.prefill_chat({{"user", "Again"}});
  EXPECT_EQ(chat.kv_stats().n_past, chatml_tokens("", "Again").size());
}

}  // namespace
}  // namespace snapvk::test
