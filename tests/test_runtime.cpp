// The Vulkan compute layer (runtime/): device choice, buffers and memory accounting, the
// dispatch() checks, timestamps, sizes and ranges that would wrap refused before Vulkan sees
// them, proof that validation errors and a missing device fail tests (RuntimeNoDevice: the
// tests that need no device), and the device's limits (RuntimeLimits).
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "host/kernels/attention.h"
#include "host/kernels/ops.h"
#include "runtime/pipeline.h"
#include "snapvk_shaders.h"
#include "tests/expect_error.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

struct Runtime : VkTest {};

TEST_F(Runtime, ListsDevicesWithFeatures) {
  auto devices = Context::list_devices();
  ASSERT_FALSE(devices.empty());
  for (const auto& d : devices) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_GT(d.subgroup_size, 0u);
    EXPECT_FALSE(d.heaps.empty());
  }
  EXPECT_GE(ctx().info().api_version, uint32_t(VK_API_VERSION_1_2));
}

TEST_F(Runtime, DeviceChoiceByIndexAndName) {
  const auto devices = Context::list_devices();
  {
    Context c(ContextOptions{"0", false});
    EXPECT_EQ(c.info().name, devices[0].name);
  }
  {
    std::string part = devices[0].name.substr(0, 4);
    for (auto& ch : part) ch = char(std::toupper(static_cast<unsigned char>(ch)));  // matching ignores case
    Context c(ContextOptions{part, false});
    EXPECT_EQ(c.info().name.substr(0, 4), devices[0].name.substr(0, 4));
  }
  try {
    Context c(ContextOptions{"99", false});
    FAIL() << "index 99 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos) << e.what();
  }
  try {
    Context c(ContextOptions{"no-such-gpu-xyz", false});
    FAIL() << "bogus name accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no Vulkan device matches"), std::string::npos) << e.what();
  }
}

TEST_F(Runtime, BuffersAreTrackedAndRoundTrip) {
  const uint64_t before = ctx().memory().current();
  const uint64_t count_before = ctx().memory().allocations();
  {
    std::vector<float> data = random_floats(12345, 9);
    Buffer b = upload(data);
    EXPECT_GE(ctx().memory().current(), before + data.size() * 4);
    EXPECT_GE(ctx().memory().peak(), ctx().memory().current());
    EXPECT_EQ(ctx().memory().allocations(), count_before + 1);
    EXPECT_EQ(download<float>(b, data.size()), data);
    Buffer moved = std::move(b);
    EXPECT_FALSE(b);
    EXPECT_EQ(download<float>(moved, 3), std::vector<float>(data.begin(), data.begin() + 3));
    moved.fill_zero();
    EXPECT_EQ(download<float>(moved, 2), std::vector<float>(2, 0.0f));
  }
  EXPECT_EQ(ctx().memory().current(), before);
  EXPECT_EQ(ctx().memory().allocations(), count_before);
}

TEST_F(Runtime, FenceTimeoutIsAnErrorAndLeavesTheProcessUsable) {
  ContextOptions o;
  o.validation = true;
  o.fence_timeout_s = 1e-6;  // shorter than any real GPU work
  {
    Context c(o);
    const uint64_t bytes = 256ull << 20;
    Buffer b(c, bytes, BufferKind::Device, "big");
    CommandStream cs(c, 0);
    auto work = [&] {
      cs.begin();
      for (uint32_t i = 0; i < 8; ++i) {
        cs.fill(b, 0, bytes, i);
        cs.barrier();
      }
      cs.submit();
    };
    try {
      work();
      FAIL() << "a 2 GiB fill finished within a microsecond";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("GPU work did not finish within 1e-06 s"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("ContextOptions::fence_timeout_s"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(c.hung());
    // The stream's command buffer may still be running: nothing more is submitted.
    try {
      work();
      FAIL() << "a hung context accepted more work";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("unusable after GPU work timed out"), std::string::npos) << e.what();
    }
    // Nor is anything new made on it (it could only be leaked).
    EXPECT_THROW(Buffer(c, 1024, BufferKind::Device, "more"), Error);
    EXPECT_THROW(CommandStream(c, 0), Error);
    EXPECT_EQ(c.validation_errors(), 0u) << c.last_validation_message();
  }  // destroyed without waiting: its objects are left to the driver
  // The process and the other contexts go on.
  std::vector<float> data = random_floats(1000, 3);
  EXPECT_EQ(download<float>(upload(data), data.size()), data);
  Context fresh(ContextOptions{});
  CommandStream cs(fresh, 0);
  Buffer b(fresh, 4096, BufferKind::Device, "small");
  cs.begin();
  cs.fill(b, 0, 4096, 7);
  cs.submit();
  EXPECT_FALSE(fresh.hung());
}

TEST_F(Runtime, DispatchChecksBindingsAndPushConstants) {
  Buffer a(ctx(), 256), b(ctx(), 256), c(ctx(), 256);
  CommandStream cs(ctx());
  cs.begin();
  // Wrong number of buffers.
  EXPECT_THROW(cs.dispatch(k().add, {a, b}, BinaryPush{4, 4}, 1), Error);
  // Wrong push-constant struct.
  EXPECT_THROW(cs.dispatch(k().add, {a, b, c}, RmsNormPush{4, 1, 0.f}, 1), Error);
  // Range past the end of a buffer.
  EXPECT_THROW(cs.dispatch(k().add, {a, b, BufferRange(c, 0, 1024)}, BinaryPush{4, 4}, 1), Error);
  // Offset that breaks the device's storage-buffer alignment (when it has one above 1).
  if (ctx().info().min_storage_buffer_offset_alignment > 1) {
    EXPECT_THROW(cs.dispatch(k().add, {a, b, BufferRange(c, 1, 64)}, BinaryPush{4, 4}, 1), Error);
  }
  // Grid beyond the device limit.
  EXPECT_THROW(cs.dispatch(k().add, {a, b, c}, BinaryPush{4, 4}, ctx().info().max_workgroup_count[0] + 1u), Error);
  cs.dispatch(k().add, {a, b, c}, BinaryPush{4, 4}, 1);
  cs.submit();
  EXPECT_EQ(cs.dispatches(), 1u);
}

TEST_F(Runtime, TimestampsAggregatePerKernel) {
  if (!ctx().info().timestamps) GTEST_SKIP() << "device has no compute timestamps";
  auto x = random_floats(4096, 1), w = random_floats(1024, 2);
  Buffer X = upload(x), W = upload(w), Y(ctx(), x.size() * 4);
  CommandStream cs(ctx());
  cs.set_profiling(true);
  cs.begin();
  for (int i = 0; i < 3; ++i) {
    op_rms_norm(cs, k(), X, W, Y, 4, 1024, 1e-5f);
    cs.barrier();
  }
  op_add(cs, k(), X, X, Y, 4096, 4096);
  cs.submit();
  auto t = cs.timings();
  ASSERT_EQ(t.size(), 2u);
  for (const auto& kt : t) {
    EXPECT_EQ(kt.count, kt.name == "rms_norm" ? 3u : 1u) << kt.name;
    EXPECT_GE(kt.total_ms, 0.0);
  }
}

// ---- sizes and ranges from callers: refused before they wrap or reach Vulkan (issue 7) --------

TEST_F(Runtime, AbsurdBufferSizeIsRefusedBeforeVulkan) {
  const uint64_t before = ctx().memory().current(), allocs = ctx().memory().allocations();
  expect_error([&] { Buffer b(ctx(), 1ull << 62, BufferKind::Device, "absurd"); },
               "out of device memory: buffer 'absurd' of 4611686018427387904 bytes is larger than the device's largest "
               "memory heap");
  expect_error([&] { Buffer b(ctx(), kU64Max, BufferKind::Staging, "absurd"); },
               "is larger than the device's largest memory heap");
  EXPECT_EQ(ctx().memory().current(), before);
  EXPECT_EQ(ctx().memory().allocations(), allocs);
}

TEST_F(Runtime, RangeChecksOfCommandsDoNotWrap) {
  Buffer a(ctx(), 256, BufferKind::Device, "a"), b(ctx(), 256, BufferKind::Device, "b");
  const uint64_t align = ctx().info().min_storage_buffer_offset_alignment;
  const uint64_t off = (kU64Max / align) * align;  // aligned, and off + 8 wraps to a small number
  CommandStream cs(ctx());
  cs.begin();
  expect_error([&] { cs.copy(a, kU64Max - 3, b, 0, 8); }, "copy out of range");
  expect_error([&] { cs.copy(a, 0, b, kU64Max - 3, 8); }, "copy out of range");
  expect_error([&] { cs.fill(a, kU64Max - 3, 8, 0); }, "fill out of range");
  expect_error([&] { op_add(cs, k(), BufferRange(a, off, 64), b, b, 16, 16); }, "is outside buffer 'a'");
  cs.submit();  // nothing invalid was recorded
}

TEST(RuntimeNoDevice, DeviceMemoryBudgetSumDoesNotWrap) {
  MemoryTracker t;
  t.set_budget(1ull << 30);
  t.reserve(100, "a");
  // now + bytes = 100 + (2^64 - 50) wrapped to 50, inside the budget.
  expect_error([&] { t.reserve(kU64Max - 49, "huge"); }, "device memory budget exceeded: huge needs");
  expect_error([&] { t.reserve(1ull << 30, "one more"); }, "device memory budget exceeded");
  EXPECT_EQ(t.current(), 100u);
  EXPECT_NO_THROW(t.reserve((1ull << 30) - 100, "the rest"));
  EXPECT_EQ(t.current(), 1ull << 30);
}

// ---- the tests' own checks ------------------------------------------------------------------

// A deliberately invalid Vulkan call, followed by the check every GPU test runs in TearDown.
void invalid_call_then_check() {
  Context& c = gpu();
  const uint64_t before = c.validation_errors();
  VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bi.size = 0;  // VUID-VkBufferCreateInfo-size-00912: size must be greater than 0
  bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT;
  VkBuffer buf = VK_NULL_HANDLE;
  vkCreateBuffer(c.device(), &bi, nullptr, &buf);
  if (buf) vkDestroyBuffer(c.device(), buf, nullptr);
  check_validation(before);
}

// The validation layer reports the invalid call, and the TearDown check turns it into a failure.
TEST_F(Runtime, ValidationErrorsFailTests) {
  ASSERT_TRUE(ctx().validation_enabled());
  EXPECT_NONFATAL_FAILURE(invalid_call_then_check(), "Vulkan validation error");
  errors_before_ = ctx().validation_errors();  // the error above was expected
}

// Without any Vulkan driver the GPU tests fail loudly; they never pass or skip.
TEST(RuntimeNoDevice, GpuTestsFailWithClearMessage) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string cmd = "VK_DRIVER_FILES=/nonexistent/icd.json VK_ICD_FILENAMES=/nonexistent/icd.json '" + self +
                          "' --gtest_filter=Runtime.ListsDevicesWithFeatures 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int status = pclose(p);
  EXPECT_NE(status, 0) << out;
  EXPECT_NE(out.find("no usable Vulkan device"), std::string::npos) << out;
  EXPECT_NE(out.find("mesa-vulkan-drivers"), std::string::npos) << out;
}

// ---- devices unlike this one ------------------------------------------------------------------

// The workgroup size a kernel's SPIR-V declares, with its specialization constants applied: what
// Pipeline checks against the device's limit.
TEST(RuntimeLimits, WorkgroupSizeIsReadFromSpirvWithSpecConstants) {
  const std::vector<uint32_t> wg64 = {64};
  EXPECT_EQ(spirv_workgroup_size(spv::rms_norm(), wg64), (std::array<uint32_t, 3>{64, 1, 1}));
  const std::vector<uint32_t> wg8 = {8};
  EXPECT_EQ(spirv_workgroup_size(spv::add(), wg8), (std::array<uint32_t, 3>{8, 1, 1}));
}

// SNAPVK_DEVICE_LIMITS=minimum: the device as the least capable one Vulkan allows; the kernels
// of a model with head_dim 256 are built within its limits, and a kernel asking for more than
// the device takes is refused by name instead of being undefined behaviour.
TEST(RuntimeLimits, MinimumLimitsHideFeaturesAndBoundEveryKernel) {
  setenv("SNAPVK_DEVICE_LIMITS", "minimum", 1);
  struct Unset {
    ~Unset() { unsetenv("SNAPVK_DEVICE_LIMITS"); }
  } unset;
  Context ctx;
  const DeviceInfo& d = ctx.info();
  EXPECT_FALSE(d.fp16 || d.int8 || d.int64 || d.storage16 || d.storage8 || d.subgroup_size_control);
  EXPECT_LE(d.max_storage_buffer_range, 1ull << 27);
  EXPECT_LE(d.max_shared_memory, 16384u);
  EXPECT_LE(d.max_workgroup_invocations, 128u);
  EXPECT_GE(d.min_storage_buffer_offset_alignment, 256u);
  Kernels k(ctx);
  EXPECT_NO_THROW(AttentionKernels(ctx, k.tuning, 256, 4));
  EXPECT_NO_THROW(AttentionKernels(ctx, k.tuning, 64, 3));
  const std::vector<uint32_t> too_wide = {256};
  try {
    Pipeline p(ctx, PipelineDesc{"rms_norm", spv::rms_norm(), 3, sizeof(RmsNormPush), too_wide});
    ADD_FAILURE() << "a workgroup of 256 was accepted on a device of 128";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Device);
    EXPECT_NE(std::string(e.what()).find("rms_norm"), std::string::npos) << e.what();
  }
  setenv("SNAPVK_DEVICE_LIMITS", "tiny", 1);
  EXPECT_THROW(Context{}, Error);
}

}  // namespace
}  // namespace snapvk::test
