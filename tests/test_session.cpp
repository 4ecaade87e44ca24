// Session behaviour around prefill: progress reports, cancellation (by callback and from
// another thread) that leaves the session usable, and reset.
#include <gtest/gtest.h>

#include <thread>

#include "host/session/sampler.h"
#include "host/session/session.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

struct SessionTest : VkTest {
  static Model& model() {
    // Never destroyed: at exit the validation layer may already be gone (see gpu_fixture.cpp).
    static Model* m = new Model(kernels(), model_path("stories260K.gguf"));
    return *m;
  }
  static std::vector<int32_t> prompt(int repeats) {
    std::string text;
    for (int i = 0; i < repeats; ++i)
      text += "Once upon a time, there was a little girl named Lily. She loved to play. ";
    return model().tokenizer().encode(text, true);
  }
};

TEST_F(SessionTest, ProgressIsReportedAndCancellationLeavesSessionUsable) {
  for (KvPolicy p : {KvPolicy::Full, KvPolicy::SnapKV}) {
    SessionOptions o;
    o.n_ctx = 512;
    o.n_batch = 16;
    o.kv_type = KvType::F32;
    o.kv.policy = p;
    if (p != KvPolicy::Full) o.kv.budget = 32, o.kv.window = 8;
    const auto tokens = prompt(6);
    Session reference(model(), o);
    auto ref_logits = reference.prefill(tokens);
    const std::vector<float> expected(ref_logits.begin(), ref_logits.end());

    uint64_t last_done = 0, calls = 0, total_seen = 0;
    bool cancel = true;
    o.on_progress = [&](uint64_t done, uint64_t total) {
      EXPECT_GE(done, last_done);
      last_done = done, total_seen = total, ++calls;
      return !(cancel && done * 2 >= total);  // stop halfway the first time
    };
    Session s(model(), o);
    EXPECT_THROW(s.prefill(tokens), Cancelled) << kv_policy_name(p);
    EXPECT_EQ(s.n_past(), 0u);
    cancel = false, last_done = 0;
    auto got = s.prefill(tokens);
    EXPECT_EQ(std::vector<float>(got.begin(), got.end()), expected) << kv_policy_name(p);
    EXPECT_GT(calls, 2u);
    EXPECT_EQ(last_done, total_seen);
  }
}

TEST_F(SessionTest, CancelFromAnotherThread) {
  SessionOptions o;
  o.n_ctx = 2048;
  o.n_batch = 8;
  std::atomic<bool> started{false}, sent{false};
  o.on_progress = [&](uint64_t, uint64_t) {
    started = true;
    while (!sent) std::this_thread::yield();  // deterministic: the cancel lands while prefill is running
    return true;
  };
  Session s(model(), o);
  const auto tokens = prompt(40);
  std::thread canceller([&] {
    while (!started) std::this_thread::yield();
    s.cancel();
    sent = true;
  });
  EXPECT_THROW(s.prefill(tokens), Cancelled);
  canceller.join();
  EXPECT_EQ(s.n_past(), 0u);
  auto logits = s.prefill(prompt(1));  // usable afterwards
  EXPECT_EQ(logits.size(), model().config().n_vocab);
}

TEST_F(SessionTest, ResetStartsANewConversation) {
  SessionOptions o;
  o.n_ctx = 256;
  o.kv.policy = KvPolicy::SnapKV;
  o.kv.budget = 24;
  o.kv.window = 8;
  Session s(model(), o);
  auto a = s.prefill(prompt(2));
  const std::vector<float> first(a.begin(), a.end());
  s.decode(argmax(a));
  s.reset();
  EXPECT_EQ(s.n_past(), 0u);
  auto b = s.prefill(prompt(2));
  EXPECT_EQ(std::vector<float>(b.begin(), b.end()), first);
}

}  // namespace
}  // namespace snapvk::test
