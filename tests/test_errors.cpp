// snapvk::Error: every failure carries its kind (and an option's failure the option), set
// where it is thrown, so callers (the C API's statuses, the CLI's option names, the profiler's
// "does not fit" rows) never read the message to decide. The C API side is in test_api.cpp
// (ApiTest.EachErrorKindReachesTheCallerAsItsStatus), the CLI side in test_bad_input.cpp. And the
// checked arithmetic on untrusted numbers (runtime/checked.h), whose errors name the quantity.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <string>

#include "host/gguf/ggml_types.h"
#include "host/gguf/gguf.h"
#include "host/kv/kv_policy.h"
#include "host/session/options.h"
#include "host/session/sampler.h"
#include "runtime/checked.h"
#include "runtime/error.h"
#include "runtime/memory.h"
#include "runtime/vk_check.h"
#include "tests/expect_error.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

// The Error `f()` throws (an InvalidArgument "no error" when it throws none, which fails).
Error error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no error";
  return Error(ErrorKind::InvalidArgument, "no error");
}

TEST(Errors, KindAndParamTravelWithTheError) {
  const Error plain(ErrorKind::Io, "x.gguf: cannot open");
  EXPECT_EQ(plain.kind(), ErrorKind::Io);
  EXPECT_EQ(plain.param(), Param::None);
  EXPECT_STREQ(plain.what(), "x.gguf: cannot open");
  const Error about(ErrorKind::InvalidArgument, "the KV window must be at least 1", opt::kv_window);
  EXPECT_EQ(about.kind(), ErrorKind::InvalidArgument);
  EXPECT_EQ(about.param(), opt::kv_window);
  EXPECT_STREQ(about.what(), "the KV window must be at least 1");  // the message is not decorated
  // Copies (rethrown, stored) keep both.
  Error copy = plain;
  copy = about;
  EXPECT_EQ(copy.kind(), ErrorKind::InvalidArgument);
  EXPECT_EQ(copy.param(), opt::kv_window);
  // Cancelled is still its own type, and an Error of kind Cancelled.
  try {
    throw Cancelled();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Cancelled);
    EXPECT_STREQ(e.what(), "cancelled");
    EXPECT_NE(dynamic_cast<const Cancelled*>(&e), nullptr);
  }
  EXPECT_STREQ(error_kind_name(ErrorKind::OutOfMemory), "out of memory");
  EXPECT_STREQ(error_kind_name(ErrorKind::BadModel), "bad model");
  EXPECT_STREQ(param_name(opt::kv_window), "kv_window");
  EXPECT_STREQ(param_name(opt::n_ctx), "n_ctx");
  EXPECT_STREQ(param_name(Param::None), "");
}

TEST(Errors, CheckedArithmeticTakesItsCallersKind) {
  const Error def = error_of([] { checked_mul(1ull << 32, 1ull << 32, "slots"); });
  EXPECT_EQ(def.kind(), ErrorKind::InvalidArgument);
  EXPECT_EQ(def.param(), Param::None);
  const Error file = error_of([] { checked_range(0, 1, 5, "model: n_layer", ErrorKind::BadModel); });
  EXPECT_EQ(file.kind(), ErrorKind::BadModel);
  EXPECT_STREQ(file.what(), "model: n_layer 0 is out of range (1..5)");
  const Error with_param = error_of([] { checked_add(~0ull, 1, "n", ErrorKind::InvalidArgument, opt::n_ctx); });
  EXPECT_EQ(with_param.param(), opt::n_ctx);
  EXPECT_EQ(error_of([] { checked_mul_u32(1ull << 16, 1ull << 16, "x", ErrorKind::BadModel); }).kind(),
            ErrorKind::BadModel);
}

TEST(Errors, VulkanResultsAndBrokenInvariants) {
  for (VkResult r : {VK_ERROR_OUT_OF_DEVICE_MEMORY, VK_ERROR_OUT_OF_HOST_MEMORY, VK_ERROR_OUT_OF_POOL_MEMORY})
    EXPECT_EQ(error_of([r] { vk_fail(r, "vkAllocateMemory", __FILE__, __LINE__); }).kind(), ErrorKind::OutOfMemory)
        << vk_result_name(r);
  for (VkResult r : {VK_ERROR_DEVICE_LOST, VK_TIMEOUT, VK_ERROR_INITIALIZATION_FAILED, VK_ERROR_UNKNOWN})
    EXPECT_EQ(error_of([r] { vk_fail(r, "vkQueueSubmit", __FILE__, __LINE__); }).kind(), ErrorKind::Device)
        << vk_result_name(r);
  const Error a = error_of([] { SNAPVK_ASSERT(1 + 1 == 3, "arithmetic"); });
  EXPECT_EQ(a.kind(), ErrorKind::Internal);
  EXPECT_NE(std::string(a.what()).find("arithmetic (1 + 1 == 3, "), std::string::npos) << a.what();
}

TEST(Errors, MemoryBudgetRefusalsAreOutOfMemory) {
  MemoryTracker t;
  t.set_budget(1000);
  t.reserve(600, "a");
  EXPECT_EQ(error_of([&] { t.reserve(500, "b"); }).kind(), ErrorKind::OutOfMemory);
  const Error held =
      error_of([&] { const MemoryTracker::Hold h = t.hold(500, [](uint64_t, uint64_t) { return "no"; }); });
  EXPECT_EQ(held.kind(), ErrorKind::OutOfMemory);
  EXPECT_STREQ(held.what(), "no");
}

TEST(Errors, ModelFilesGiveIoForTheFileAndBadModelForItsContent) {
  EXPECT_EQ(error_of([] { GgufFile::open("/nonexistent/model.gguf"); }).kind(), ErrorKind::Io);
  EXPECT_EQ(error_of([] { GgufFile::open(models_dir().string()); }).kind(), ErrorKind::Io);  // a directory
  EXPECT_EQ(error_of([] { GgufFile::open(model_path("tok512.bin")); }).kind(), ErrorKind::BadModel);
  const std::string junk = "GGUF but not really";
  EXPECT_EQ(error_of([&] { GgufFile::from_memory(junk.data(), junk.size(), "junk"); }).kind(), ErrorKind::BadModel);
  EXPECT_EQ(error_of([] { traits_of(GgmlType(200)); }).kind(), ErrorKind::BadModel);
  // Present but not a model: a vocabulary-only GGUF has no architecture.
  const GgufFile vocab = GgufFile::open(model_path("ggml-vocab-llama-spm.gguf"));
  EXPECT_EQ(error_of([&] { vocab.require_tensor("token_embd.weight", {1}); }).kind(), ErrorKind::BadModel);
}

TEST(Errors, OptionChecksNameTheirOption) {
  auto param_of = [](const std::function<void(KvPolicyOptions&)>& edit) {
    KvPolicyOptions o;
    o.policy = KvPolicy::SnapKV, o.budget = 64, o.window = 8;
    edit(o);
    const Error e = error_of([&] { o.validate(); });
    EXPECT_EQ(e.kind(), ErrorKind::InvalidArgument) << e.what();
    // host/ speaks of the quantity, not of a command-line flag.
    EXPECT_EQ(std::string(e.what()).find("--"), std::string::npos) << e.what();
    return e.param();
  };
  EXPECT_EQ(param_of([](KvPolicyOptions& o) { o.window = 64; }), opt::kv_window);
  EXPECT_EQ(param_of([](KvPolicyOptions& o) { o.window = 0; }), opt::kv_window);
  EXPECT_EQ(param_of([](KvPolicyOptions& o) { o.kernel = 4; }), opt::kv_kernel);
  EXPECT_EQ(param_of([](KvPolicyOptions& o) { o.budget = 1u << 30; }), opt::kv_budget);
  EXPECT_EQ(param_of([](KvPolicyOptions& o) { o.budget = 0; }), opt::kv_budget);
  EXPECT_EQ(param_of([](KvPolicyOptions& o) { o.budget = 0, o.ratio = 1.5f; }), opt::kv_ratio);
  EXPECT_EQ(param_of([](KvPolicyOptions& o) { o.ratio = 0.5f; }), opt::kv_ratio);
  EXPECT_EQ(param_of([](KvPolicyOptions& o) { o.pyramid_beta = 0, o.policy = KvPolicy::PyramidKV; }), Param::None);
  SamplerParams sp;
  sp.temp = -1;
  EXPECT_EQ(error_of([&] { Sampler s(sp); }).kind(), ErrorKind::InvalidArgument);
}

TEST(Errors, CheckedHelpersNameTheQuantity) {
  EXPECT_EQ(checked_mul(1ull << 32, 1ull << 31, "x"), 1ull << 63);
  expect_error([] { checked_mul(1ull << 32, 1ull << 32, "KV bytes"); },
               "KV bytes (4294967296 * 4294967296) overflows 64 bits");
  EXPECT_EQ(checked_add(kU64Max - 1, 1, "x"), kU64Max);
  expect_error([] { checked_add(kU64Max, 1, "peak"); }, "peak (18446744073709551615 + 1) overflows 64 bits");
  EXPECT_EQ(checked_mul_u32(65535, 65537, "x"), kU32Max);
  expect_error([] { checked_mul_u32(65536, 65536, "slots"); }, "slots (65536 * 65536) overflows 32 bits");
  expect_error([] { checked_mul_u32(kU64Max, 2, "slots"); }, "overflows 32 bits");  // the 64-bit product wraps too
  EXPECT_EQ(checked_range(5, 1, 5, "x"), 5u);
  expect_error([] { checked_range(0, 1, 5, "n_ctx"); }, "n_ctx 0 is out of range (1..5)");
}

}  // namespace
}  // namespace snapvk::test
