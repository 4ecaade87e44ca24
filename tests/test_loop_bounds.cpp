// Every embedded kernel against llvmpipe's loop limit (host/kernels/loop_bounds.h): at the
// largest shape snapvk supports, the loop iterations one invocation runs, as its op states them
// (the *_loops functions), stay under kLoopIterationBudget. The loops an op states must be the
// rolled loops of the kernel's SPIR-V, one for one, so a kernel added to shaders.cmake, or a
// loop added to a shader, without its count here fails this test. docs/reliability.md ("Loop
// limits") holds the table it prints.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <string>

#include "host/kernels/attention.h"
#include "host/ref/reference.h"
#include "snapvk_shaders.h"
#include "tests/gpu_fixture.h"

namespace snapvk::test {
namespace {

// The largest shape: a 128K-token context at head_dim 256 and GQA group 16, every query of it
// voting (H2O, or a window that long), pooling and word completion reaching across it, Ada-KV
// ranking 32 KV heads at once; model rows of up to 65536 (kMaxEmbd) and weight rows of 131072.
struct Largest {
  uint32_t context = 131072, head_dim = 256, group = 16, n_kv = 32, n_embd = 65536, K = 131072;
};

// Rolled loops in a SPIR-V module: OpLoopMerge (246) without the Unroll bit of its loop control.
uint32_t rolled_loops(std::span<const uint32_t> spirv) {
  uint32_t n = 0;
  for (size_t i = 5; i < spirv.size();) {
    const uint32_t op = spirv[i] & 0xFFFFu, words = spirv[i] >> 16;
    if (words == 0) break;
    if (op == 246 && i + 3 < spirv.size() && !(spirv[i + 3] & 1u)) ++n;
    i += words;
  }
  return n;
}

KvType kv_type_of(const std::string& name) {
  for (const auto& [n, t] : kKvTypeNames)
    if (name.size() > std::string(n).size() && name.ends_with(std::string("_") + n)) return t;
  throw std::runtime_error("no KV type in kernel name " + name);
}

// The weight type of matvec_<w>_f32[_i64]
GgmlType weight_type_of(const std::string& name) {
  const size_t a = name.find('_') + 1, b = name.find("_f32", a);
  const auto t = parse_type(name.substr(a, b - a));
  if (!t) throw std::runtime_error("no weight type in kernel name " + name);
  return *t;
}

KernelLoops larger(const KernelLoops& a, const KernelLoops& b) { return a.total() >= b.total() ? a : b; }

// Each kernel's loops at the largest shape, as its op dispatches it on this device; nullopt for
// a kernel this test does not know.
std::optional<KernelLoops> loops_at_largest(const spv::Embedded& e, const Kernels& k, AttentionKernels& a) {
  const Largest s;
  const std::string src = e.source, name = e.name;
  for (const char* none :
       {"add.comp", "mul.comp", "rope.comp", "swiglu.comp", "softcap.comp", "kv_gather.comp", "adakv_floor.comp",
        "hadamard.comp"})
    if (src == none) return KernelLoops(e.name);
  if (src == "rms_norm.comp") return rms_norm_loops(k, s.n_embd);
  if (src == "get_rows.comp") return get_rows_loops(k, s.n_embd);
  if (src == "matvec.comp")  // weight rows that whole units tile, and (f32, f16, bf16) that they do not
    return larger(matvec_loops(k, weight_type_of(name), s.K), matvec_loops(k, weight_type_of(name), s.K - 2));
  if (src == "matmul.comp") return matmul_loops(k, s.K, false);
  if (src == "matmul_rows.comp") return matmul_loops(k, s.K, true);
  if (src == "kv_store.comp") return kv_store_loops(kv_type_of(name));
  if (src == "k_center.comp") return k_center_loops();
  if (src == "attn_prefill.comp" || src == "attn_prefill_rows.comp") {
    a.use_prefill_rows = src == "attn_prefill_rows.comp";
    // a pass's keys: the op's passes cover a row of the whole context
    const uint32_t keys = std::min(s.context + 64, attn_prefill_pass_keys(a));
    return attn_prefill_loops(a, a.use_prefill_rows, keys);
  }
  if (src == "attn_decode.comp") return attn_decode_loops(a);
  if (src == "attn_combine.comp") return attn_combine_loops(a, (s.context + a.decode_chunk - 1) / a.decode_chunk);
  if (src == "window_stats.comp") return window_stats_loops(a, s.context);
  if (src == "window_votes.comp") return window_votes_loops(a.group, a.votes_qb, std::min(s.context, a.votes_pass));
  if (src == "pool.comp") return pool_loops(std::min(s.context, a.pool_pass));
  if (src == "complete_words.comp") return complete_words_loops(std::min(s.context, a.words_pass));
  if (src == "topk_select.comp") {  // Ada-KV's layer-wide ranking; one head's is shorter
    const uint32_t seg = s.n_kv * s.context, count = seg / 2;
    return topk_loops(topk_workgroup(a, seg, count), seg, count);
  }
  if (src == "adakv_layout.comp") return adakv_layout_loops(s.n_kv, s.n_kv * s.context);
  return std::nullopt;
}

struct LoopBounds : VkTest {};

TEST_F(LoopBounds, EveryKernelStaysUnderTheCapAtTheLargestShape) {
  const Largest s;
  AttentionKernels a(ctx(), k().tuning, s.head_dim, s.group);
  std::map<std::string, std::pair<std::string, uint64_t>> by_source;  // the table: worst variant of each shader
  for (const spv::Embedded& e : spv::kAll) {
    const std::optional<KernelLoops> loops = loops_at_largest(e, k(), a);
    if (!loops) {
      ADD_FAILURE() << e.name << " (" << e.source << "): no loop count; add its *_loops function and a case here";
      continue;
    }
    EXPECT_EQ(loops->count, rolled_loops(e.spirv()))
        << e.name << ": the loops its op counts are not the rolled loops of its SPIR-V";
    EXPECT_LT(loops->total(), kLoopIterationBudget) << e.name << ": " << loops->total() << " loop iterations";
    auto& row = by_source[e.source];
    if (row.first.empty() || loops->total() > row.second) {
      std::string what;
      for (uint32_t i = 0; i < loops->count; ++i)
        if (loops->loops[i].iterations)
          what += (what.empty() ? "" : ", ") + std::string(loops->loops[i].what) + " " +
                  std::to_string(loops->loops[i].iterations);
      row = {what.empty() ? "no loops" : what, loops->total()};
    }
  }
  std::printf("  %s, subgroup %u: kernel | loops (iterations per invocation) | total\n", ctx().info().name.c_str(),
              k().tuning.subgroup);
  for (const auto& [src, row] : by_source)
    std::printf("  %s | %s | %llu\n", src.c_str(), row.first.c_str(), static_cast<unsigned long long>(row.second));
}

// The op's passes: at the largest shape, the longest row is walked in passes that each stay
// under the cap, and they need the state attn_scratch_floats() sizes a session's part for.
TEST_F(LoopBounds, PrefillPassesCoverTheLongestRowWithinTheScratch) {
  const Largest s;
  AttentionKernels a(ctx(), k().tuning, s.head_dim, s.group);
  for (bool rows : {false, true}) {
    a.use_prefill_rows = rows;
    const uint32_t pass = attn_prefill_pass_keys(a), passes = attn_prefill_passes(a, s.context);
    EXPECT_LT(attn_prefill_loops(a, rows, pass).total(), kLoopIterationBudget);
    EXPECT_GE(attn_prefill_loops(a, rows, pass + a.prefill_bc).total(), kLoopIterationBudget)
        << "passes could be longer";
    EXPECT_GE(uint64_t(passes) * pass, s.context + (rows ? a.prefill_rows_qt - 1 : a.prefill_br + a.prefill_bc - 2));
    const uint32_t n_head = s.group * 8, T = 512;
    EXPECT_LE(attn_prefill_state_floats(a, T, n_head, s.context),
              attn_scratch_floats(a.decode_chunk, s.head_dim, n_head, s.context, T));
  }
  EXPECT_LT(window_votes_loops(s.group, a.votes_qb, window_votes_pass_queries(s.group)).total(), kLoopIterationBudget);
}

// A pass is as long as the counts allow: window_votes' longest, at the largest head_dim and group
// (where Mesa unrolls nothing of its own), against the same work in short passes (the same
// additions in the same order: equal to the bit). Had the count fallen short of the driver's, the
// long pass would stop early, as attn_prefill's tiles did before the budget's spare sixteenth
// (ModelKernel.PrefillRowsPastTheLoopLimitMatchReference runs its longest pass).
TEST_F(LoopBounds, WindowVotesPassAsLongAsCountedEqualsShortPasses) {
  const Largest s;
  const uint32_t n_kv = 1, n_head = s.group, P = 64;
  AttentionKernels a(ctx(), k().tuning, s.head_dim, s.group);
  const uint32_t n_q = a.votes_pass, L = n_q + P;
  std::vector<float> st(size_t(n_head) * n_q * 2);
  for (size_t i = 0; i < st.size(); i += 2) st[i] = 0.5f, st[i + 1] = 1000.0f;  // a row's max and sum
  Buffer q = upload(random_floats(size_t(n_q) * n_head * s.head_dim, 51)),
         keys = upload(random_floats(size_t(L) * s.head_dim, 52));
  Buffer stats = upload(st), heads = upload(std::vector<uint32_t>{0, 0});
  Buffer votes(ctx(), P * 4), sums(ctx(), size_t(n_head) * P * 4);
  auto run = [&](uint32_t pass) {
    a.votes_pass = pass;
    CommandStream cs(ctx());
    cs.begin();
    op_window_votes(cs, k(), a, KvType::F16, q, keys, stats, votes, heads, sums, L, n_q, P, n_head, n_kv, 0.0625f,
                    GqaAgg::Max);
    cs.submit();
    return download<float>(votes, P);
  };
  const auto one = run(n_q), short_passes = run(256);
  EXPECT_EQ(one, short_passes) << "one pass of " << n_q << " voting queries";
}

// The tiled matmul (lavapipe's for rows whose length K % 4 != 0) over a row of 40,002: its
// rolled loops took ~28 iterations per tile of 16, past llvmpipe's limit at K ~ 37,000.
TEST_F(LoopBounds, MatmulOverALongRowMatchesReference) {
  const uint32_t M = 5, N = 9, K = 40002;
  const auto w = random_floats(size_t(N) * K, 61), x = random_floats(size_t(M) * K, 62);
  Buffer W = upload(w), X = upload(x), Y(ctx(), size_t(M) * N * 4);
  CommandStream cs(ctx());
  cs.begin();
  op_matmul(cs, k(), GgmlType::F32, W, X, Y, M, N, K);
  cs.submit();
  std::vector<float> want(size_t(M) * N);
  ref::matmul(GgmlType::F32, w.data(), x.data(), want.data(), M, N, K);
  EXPECT_LE(max_abs_diff(download<float>(Y, want.size()), want), 0.01f);
}

// Past the budget, an op refuses on a device with the cap, and only there.
TEST(LoopBoundsHost, PastTheCapIsAnErrorOnLlvmpipeOnly) {
  DeviceInfo cpu, gpu;
  cpu.type = VK_PHYSICAL_DEVICE_TYPE_CPU, cpu.name = "llvmpipe (LLVM 15.0.6, 256 bits)";
  gpu.type = VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU, gpu.name = "a GPU";
  const KernelLoops within = KernelLoops("window_stats").add("keys", kLoopIterationBudget - 1);
  KernelLoops past = KernelLoops("window_stats").add("keys", kLoopIterationBudget - 1);
  past.add("loading the query", 1);
  EXPECT_NO_THROW(check_loops(cpu, within, [] { return std::string("a prompt of 1 token"); }));
  EXPECT_NO_THROW(check_loops(gpu, past, [] { return std::string("a prompt of 1 token"); }));
  try {
    check_loops(cpu, past, [] { return std::string("a prompt of 8388608 tokens"); });
    ADD_FAILURE() << "no error past the cap";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::InvalidArgument);
    EXPECT_EQ(
        std::string(e.what()),
        "window_stats: a prompt of 8388608 tokens needs 61440 loop iterations in one shader invocation, too close "
        "to the 65535 at which llvmpipe (LLVM 15.0.6, 256 bits) ends them");
  }
}

}  // namespace
}  // namespace snapvk::test
