#pragma once
// Attention and KV-cache kernels, specialised for one model's head_dim and GQA group and
// built once at model load: storing K/V, prefill and decode attention, and the SnapKV passes
// (window scores, votes, pooling, top-K selection, gather into the compacted cache).
// Every cache is described by a heads table (shaders/heads.glsl): per KV head, the offset of
// its rows and how many retained prompt entries precede the appended tokens.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "host/kernels/loop_bounds.h"
#include "host/kernels/ops.h"
#include "runtime/names.h"
#include "kv_format.h"

namespace snapvk {

// KV-cache storage types, with shaders/kv_format.h's values (row layouts in shaders/kv.glsl):
// llama.cpp's cache types, and hq4 / hq3, which rotate each head's vectors (hadamard.comp) and
// quantize them on a Gaussian grid at 4.5 and 3.5 bits per value.
enum class KvType : uint32_t {
  F32 = SNAPVK_KV_F32,
  F16 = SNAPVK_KV_F16,
  Q8_0 = SNAPVK_KV_Q8_0,
  BF16 = SNAPVK_KV_BF16,
  Q4_0 = SNAPVK_KV_Q4_0,
  Q4_1 = SNAPVK_KV_Q4_1,
  IQ4_NL = SNAPVK_KV_IQ4_NL,
  Q5_0 = SNAPVK_KV_Q5_0,
  Q5_1 = SNAPVK_KV_Q5_1,
  HQ4 = SNAPVK_KV_HQ4,
  HQ3 = SNAPVK_KV_HQ3,
};
constexpr uint32_t kKvTypes = SNAPVK_KV_TYPES;
// By name, in the C API's order (snapvk_kv_type).
inline constexpr Named<KvType> kKvTypeNames[] = {
    {"f16", KvType::F16},   {"f32", KvType::F32},   {"q8_0", KvType::Q8_0}, {"bf16", KvType::BF16},
    {"q4_0", KvType::Q4_0}, {"q4_1", KvType::Q4_1}, {"iq4_nl", KvType::IQ4_NL}, {"q5_0", KvType::Q5_0},
    {"q5_1", KvType::Q5_1}, {"hq4", KvType::HQ4},   {"hq3", KvType::HQ3}};
constexpr std::span<const Named<KvType>> names(KvType) { return kKvTypeNames; }
const char* kv_type_name(KvType t);
std::optional<KvType> parse_kv_type(std::string_view name);
uint32_t kv_row_words(KvType t, uint32_t head_dim);  // 32-bit words per cached K or V row
inline uint64_t kv_row_bytes(KvType t, uint32_t head_dim) { return 4ull * kv_row_words(t, head_dim); }
// hq4 and hq3: the forward pass rotates q, k (a rotated K) or v and the output (a rotated V).
constexpr bool kv_type_rotated(KvType t) { return t == KvType::HQ4 || t == KvType::HQ3; }
// Rows of 32-value blocks (all but f32, f16 and bf16, which store values one by one).
constexpr bool kv_type_blocks(KvType t) { return t != KvType::F32 && t != KvType::F16 && t != KvType::BF16; }
// Why rows of head_dim values cannot be stored as `t` (block types need whole 32-value blocks),
// naming the types that can; empty when they can.
std::string kv_type_unsupported(KvType t, uint32_t head_dim);

// The K and V caches' types, chosen separately (llama.cpp's --cache-type-k / --cache-type-v).
struct KvTypes {
  KvType k = KvType::F16, v = KvType::F16;
  bool operator==(const KvTypes&) const = default;
  uint64_t row_bytes(uint32_t head_dim) const { return kv_row_bytes(k, head_dim) + kv_row_bytes(v, head_dim); }
};
// "q4_0" when both are, else "q8_0/q4_0" (K/V)
std::string kv_types_name(KvTypes t);
// The check of kv_type_unsupported for both, as an InvalidArgument Error naming `param`.
void check_kv_types(KvTypes t, uint32_t head_dim);

// What each kernel's GPU time counts as in reports (PipelineDesc::category): the compression
// passes of SnapKV and family, or anything else.
enum KernelCategory : uint32_t { kKernelOther = 0, kKernelScore, kKernelPool, kKernelSelect, kKernelGather };

// GQA aggregation of query-head votes into a KV-head vote (the window_votes push value).
enum class GqaAgg : uint32_t { Mean = 0, Max = 1, Sum = 2 };
inline constexpr Named<GqaAgg> kGqaAggNames[] = {{"mean", GqaAgg::Mean}, {"max", GqaAgg::Max}, {"sum", GqaAgg::Sum}};
constexpr std::span<const Named<GqaAgg>> names(GqaAgg) { return kGqaAggNames; }

struct AttentionKernels {
  AttentionKernels() = default;
  AttentionKernels(Context& ctx, const Tuning& t, uint32_t head_dim, uint32_t group);
  uint32_t head_dim = 0, group = 0;
  uint32_t subgroup = 32;                     // the device's (Tuning::subgroup)
  uint32_t prefill_br = 16, prefill_bc = 16;  // query rows / keys per prefill tile
  uint32_t prefill_wg = 0;                    // invocations per prefill tile
  uint32_t decode_chunk = 256;                // cache rows per decode workgroup
  uint32_t decode_wg = 0, combine_wg = 0, stats_wg = 0;
  uint32_t votes_wg = 64;          // keys per window_votes workgroup
  uint32_t votes_qb = 16;          // voting queries per block of window_votes
  uint32_t select_wg = 256;        // invocations per top-K segment
  uint32_t select_wide_wg = 1024;  // ... of topk_wide
  // Where one dispatch would loop too long (host/kernels/loop_bounds.h), the ops split: keys per
  // attn_prefill pass (0: as many as the kernel's loops allow, attn_prefill_pass_keys()) and
  // voting queries per window_votes pass. Tests lower them to exercise the split.
  uint32_t prefill_pass = 0;
  uint32_t votes_pass = 0;      // window_votes_pass_queries(group)
  uint32_t pool_pass = 32768;   // positions of a pooling window per pool pass
  uint32_t words_pass = 16384;  // steps either way per complete_words pass (two loops of them)
  bool use_prefill_rows = false;
  uint32_t prefill_rows_wg = 8, prefill_rows_qt = 2;
  Pipeline combine;
  Pipeline pool;
  Pipeline complete_words;
  Pipeline topk;
  Pipeline topk_wide;  // the widest workgroup: segments whose share per invocation would loop too long
  Pipeline adakv_floor;
  Pipeline adakv_layout;
  Pipeline kv_gather;

  // The kernels of a KV type or a pair of them, each created by its first call (once, from any
  // thread; shaders/shaders.cmake builds 121 attention pairs, a session uses one). Throw
  // InvalidArgument when the type cannot hold this head_dim.
  const Pipeline& store(KvType t) const;
  const Pipeline& window_stats(KvType k) const;
  const Pipeline& window_votes(KvType k) const;
  const Pipeline& prefill(KvTypes t) const;       // tiled in shared memory (GPUs)
  const Pipeline& prefill_rows(KvTypes t) const;  // a few query rows per invocation (SIMD CPUs)
  const Pipeline& decode(KvTypes t) const;
  const Pipeline& hadamard() const;  // the rotated types' transform
  const Pipeline& k_center() const;  // the rotated K types' centre
  // Creates every kernel a session of these types dispatches, so that none is made during a step.
  void prepare(KvTypes t) const;
  uint32_t rotation_block = 0;       // values the transform mixes: head_dim's largest power-of-two divisor

 private:
  struct Lazy;
  std::shared_ptr<Lazy> lazy_;
};

// A sliding-window layer (Gemma 3): a query at position p sees keys p - window + 1 .. p, and its
// cache is a ring of `ring` rows per head (position p at row p % ring, base 0, row0 the
// position). {0, 0}: a causal layer over a linear cache.
struct KvWindow {
  uint32_t window = 0, ring = 0;
};

// ---- push constants (one struct per kernel; names as in the shaders, where a cache row is a "slot") ----
struct KvStorePush {
  uint32_t T, n_kv, slot0, ring;
  uint32_t centered;  // subtract the centre (a rotated K cache)
};
struct KCenterPush {
  uint32_t T, n;
};
struct AttnPrefillPush {
  uint32_t T, n_head, n_kv, slot0;
  float scale;
  uint32_t window, ring;
  uint32_t pass_keys, pass, n_pass;
};
struct AttnDecodePush {
  uint32_t n_appended, n_split;
  float scale;
  uint32_t window, ring;
};
struct AttnCombinePush {
  uint32_t n_split;
};
struct WindowStatsPush {
  uint32_t L, n_q, n_head, n_kv;
  float scale;
};
struct WindowVotesPush {
  uint32_t L, n_q, P, n_head;
  float scale;
  uint32_t agg, q_begin, q_end;
};
struct PoolPush {
  uint32_t P, n_kv, kernel_size, avg, ahead, w_begin, w_end;
};
struct CompleteWordsPush {
  uint32_t P, n_kv, r_begin, r_end;
};
struct TopkPush {
  uint32_t seg_len, count;
};
struct AdakvFloorPush {
  uint32_t P, n_kv, floor_count;
};
struct AdakvLayoutPush {
  uint32_t n_kv, P, total, window, room;
};
struct KvGatherPush {
  uint32_t n_kv, k_words, v_words, max_slots, src_stride, P, window;
};
struct HadamardPush {
  uint32_t n_rows, inverse;
};

// ---- ops ----
// src [T, n_kv, hd] f32 -> cache rows offset(h) + base(h) + row0 + t (a ring: offset(h) +
// (row0 + t) % ring)
// center: [n_kv, hd] subtracted from every row first (a rotated K cache's, op_k_center), or none.
// v_src, v_cache: V's rows and cache of the same type, stored by the same dispatch (none: K's only).
void op_kv_store(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvType kt, BufferRange src,
                 BufferRange cache, BufferRange heads, uint32_t T, uint32_t n_kv, uint32_t row0, uint32_t ring = 0,
                 const Buffer* center = nullptr, BufferRange v_src = {}, BufferRange v_cache = {});
// center [n_kv, hd] = the mean of the first SNAPVK_K_CENTER_ROWS of k's T rows [T, n_kv, hd].
void op_k_center(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange keys, BufferRange center,
                 uint32_t T, uint32_t n_kv);
// q [T, n_head, hd] are the appended tokens, rows row0..row0+T-1 after each head's base; o [T, n_head*hd].
// A query sees at most max_len keys (a window: at most `window` of them). Rows that see more
// than one pass walks (attn_prefill_pass_keys()) are walked in passes that carry their softmax in
// `part` (attn_prefill_state_floats(); unread with one pass) and in o.
void op_attn_prefill(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvTypes kt, BufferRange q,
                     BufferRange kc, BufferRange vc, BufferRange heads, BufferRange part, BufferRange o, uint32_t T,
                     uint32_t n_head, uint32_t n_kv, uint32_t row0, uint32_t max_len, float scale, KvWindow w = {});
// Keys per pass: whole key blocks, as many as keep the kernel in use under kLoopIterationBudget
// (AttentionKernels::prefill_pass when set; the tiled kernel's must be whole blocks).
uint32_t attn_prefill_pass_keys(const AttentionKernels& a);
// Passes op_attn_prefill records for rows of up to max_len keys, and the floats of `part` they carry state in.
uint32_t attn_prefill_passes(const AttentionKernels& a, uint32_t max_len);
uint64_t attn_prefill_state_floats(const AttentionKernels& a, uint32_t T, uint32_t n_head, uint32_t max_len);
// One query per head, q [n_head, hd]; head h holds base(h) + n_appended rows (a window: the last
// `window` of them), at most max_len. Records attn_decode, a barrier and attn_combine; part holds
// attn_partial_floats().
void op_attn_decode(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvTypes kt, BufferRange q,
                    BufferRange kc, BufferRange vc, BufferRange heads, BufferRange part, BufferRange o, uint32_t n_head,
                    uint32_t n_kv, uint32_t max_len, uint32_t n_appended, float scale, KvWindow w = {});
uint64_t attn_partial_floats(const AttentionKernels& a, uint32_t n_head, uint32_t max_len);
// What a session's `part` buffer holds for both: decode's partials over n_ctx rows, or the
// passes' state of a prefill batch of n_batch rows, whichever is larger. From the model's shape
// and decode_chunk alone, as the memory model counts it.
uint64_t attn_scratch_floats(uint32_t decode_chunk, uint32_t head_dim, uint32_t n_head, uint32_t n_ctx,
                             uint32_t n_batch);

// SnapKV scores. q [n_q, n_head, hd]: the last n_q prompt queries (positions L-n_q ..).
// stats [n_head][n_q][2]; votes [n_kv][P] for prefix positions 0..P-1.
void op_window_stats(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvType kt, BufferRange q,
                     BufferRange kc, BufferRange heads, BufferRange stats, uint32_t L, uint32_t n_q, uint32_t n_head,
                     uint32_t n_kv, float scale);
// More than AttentionKernels::votes_pass voting queries are taken in passes that keep each
// query head's sums in `sums` ([n_head][P] floats; unread with one pass: window_votes_passes()).
void op_window_votes(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvType kt, BufferRange q,
                     BufferRange kc, BufferRange stats, BufferRange votes, BufferRange heads, BufferRange sums,
                     uint32_t L, uint32_t n_q, uint32_t P, uint32_t n_head, uint32_t n_kv, float scale, GqaAgg agg);
uint32_t window_votes_passes(const AttentionKernels& a, uint32_t n_q);
// Voting queries one window_votes pass takes at GQA group `group`: as many as keep an
// invocation's loops under kLoopIterationBudget. A function of the model's shape alone, so that the
// memory model counts the sums too.
uint32_t window_votes_pass_queries(uint32_t group, uint32_t qb = 16);
void op_pool(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange votes, BufferRange pooled,
             uint32_t P, uint32_t n_kv, uint32_t kernel_size, bool avg, uint32_t ahead = 0);
// out[h][j] = max of scores[h][t] over the positions t of j's word (words[t]: the number of t's
// word, word_numbers()), at most `reach` either way.
void op_complete_words(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange scores,
                       BufferRange words, BufferRange out, uint32_t P, uint32_t n_kv, uint32_t reach);
// The words of a prompt as complete_words reads them: word_continuations (1: token t continues
// the word of t - 1) numbered, each word one more than the one before.
std::vector<uint32_t> word_numbers(std::span<const uint32_t> continuations);
// Per segment of seg_len scores: the `count` best positions, ascending, ties to the lower one. A
// segment too long for select_wg's loops (Ada-KV's layer-wide one) runs on topk_wide.
void op_topk(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange scores, BufferRange sel,
             uint32_t segments, uint32_t seg_len, uint32_t count);
uint32_t topk_workgroup(const AttentionKernels& a, uint32_t seg_len, uint32_t count);  // select_wg or select_wide_wg
void op_adakv_floor(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange scores,
                    BufferRange floor_sel, uint32_t P, uint32_t n_kv, uint32_t floor_count);
void op_adakv_layout(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange sel, BufferRange heads,
                     BufferRange info, uint32_t n_kv, uint32_t P, uint32_t total, uint32_t window, uint32_t room);
// Copies the retained rows (selected prefix positions, then the window) of each head from a
// full cache [n_kv][src_stride rows] into the compacted one described by `heads`.
void op_kv_gather(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange src_k, BufferRange src_v,
                  BufferRange dst_k, BufferRange dst_v, BufferRange sel, BufferRange info, BufferRange heads,
                  uint32_t n_kv, KvTypes types, uint32_t max_rows, uint32_t src_stride, uint32_t P,
                  uint32_t window);
// x [rows, hd] in place: each row by the rotated types' fixed orthogonal transform, or by its
// transpose (inverse).
void op_kv_rotate(CommandStream& cs, const AttentionKernels& a, BufferRange x, uint32_t rows, bool inverse = false);

// ---- loops per invocation (host/kernels/loop_bounds.h) of each kernel above, at a shape ----
// kv_store, kv_gather, hadamard and adakv_floor have none but q8_0's quantizing and the
// rotated types' scale search (constants).
KernelLoops kv_store_loops(KvType kt);
KernelLoops k_center_loops();
// keys: the most one pass of one invocation walks (its rows' keys, at most attn_prefill_pass_keys())
KernelLoops attn_prefill_loops(const AttentionKernels& a, bool rows_kernel, uint32_t keys);
KernelLoops attn_decode_loops(const AttentionKernels& a);
KernelLoops attn_combine_loops(const AttentionKernels& a, uint32_t n_split);
KernelLoops window_stats_loops(const AttentionKernels& a, uint32_t L);
// queries: voting queries of one pass
KernelLoops window_votes_loops(uint32_t group, uint32_t qb, uint32_t queries);
// window: positions one pass pools (of min(kernel_size + ahead, P)); steps: one pass's either way
KernelLoops pool_loops(uint32_t window);
KernelLoops complete_words_loops(uint32_t steps);
KernelLoops topk_loops(uint32_t wg, uint32_t seg_len, uint32_t count);
KernelLoops adakv_layout_loops(uint32_t n_kv, uint32_t total);

}  // namespace snapvk
