// Packs and endless chat through the public API (snapvk_session_save/load, to a file and to
// memory; kv_endless), as an application uses them.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <snapvk/snapvk.h>
#include <snapvk/snapvk.hpp>

#include "tests/test_util.h"

namespace snapvk::test {
namespace {

const char* kDoc = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. ";

struct PackApi : ::testing::Test {
  static snapvk_model* model() {
    static snapvk_model* m = [] {
      snapvk_device* d = nullptr;
      EXPECT_EQ(snapvk_device_create(nullptr, &d), SNAPVK_OK) << snapvk_last_error();
      snapvk_model* out = nullptr;
      EXPECT_EQ(snapvk_model_load(d, model_path("stories260K.gguf").c_str(), nullptr, &out), SNAPVK_OK)
          << snapvk_last_error();
      snapvk_device_free(d);  // the model keeps it
      return out;
    }();
    return m;
  }
  static snapvk_session* session(const char* policy, uint32_t budget, uint32_t endless = 0, uint32_t n_ctx = 256) {
    snapvk_session_options o{};
    o.struct_size = sizeof o;
    o.n_ctx = n_ctx;
    o.kv_type = SNAPVK_KV_TYPE_F32;
    o.kv_policy_name = policy;
    o.kv_budget = budget;
    o.kv_window = budget ? 8 : 0;
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

TEST_F(PackApi, SaveAndLoadThroughMemoryAndFilesGiveTheSameAnswer) {
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

TEST_F(PackApi, EmptySessionHasNothingToSave) {
  snapvk_session* s = session("full", 0);
  size_t size = 0;
  EXPECT_EQ(snapvk_session_save_to_memory(s, nullptr, 0, &size), SNAPVK_INVALID_ARGUMENT);
  snapvk_session_free(s);
}

TEST_F(PackApi, EndlessChatStaysWithinItsBudget) {
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

}  // namespace
}  // namespace snapvk::test
