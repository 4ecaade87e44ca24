#pragma once
// Attention and KV-cache kernels, specialised for one model's head_dim and GQA group and
// built once at model load: storing K/V, prefill and decode attention, and the SnapKV passes
// (window scores, votes, pooling, top-K selection, gather into the compacted cache).
// Every cache is described by a heads table (shaders/heads.glsl): per KV head, the offset of
// its rows and how many retained prompt entries precede the appended tokens.
#include <cstdint>
#include <optional>
#include <string_view>

#include "host/kernels/ops.h"
#include "runtime/names.h"

namespace snapvk {

// KV-cache storage types; q8_0 keeps 32-value blocks of int8 with an f16 scale each.
enum class KvType : uint32_t { F32 = 0, F16 = 1, Q8_0 = 2 };
constexpr uint32_t kKvTypes = 3;
// By name, in the C API's order (snapvk_kv_type).
inline constexpr Named<KvType> kKvTypeNames[] = {{"f16", KvType::F16}, {"f32", KvType::F32}, {"q8_0", KvType::Q8_0}};
constexpr std::span<const Named<KvType>> names(KvType) { return kKvTypeNames; }
const char* kv_type_name(KvType t);
std::optional<KvType> parse_kv_type(std::string_view name);
uint32_t kv_row_words(KvType t, uint32_t head_dim);  // 32-bit words per cached K or V row
inline uint64_t kv_row_bytes(KvType t, uint32_t head_dim) { return 4ull * kv_row_words(t, head_dim); }

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
  uint32_t prefill_br = 16, prefill_bc = 16;  // query rows / keys per prefill tile
  uint32_t decode_chunk = 256;                // cache rows per decode workgroup
  uint32_t votes_wg = 64;                     // keys per window_votes workgroup
  uint32_t select_wg = 256;                   // invocations per top-K segment
  Pipeline kv_store[kKvTypes];
  Pipeline prefill[kKvTypes];       // tiled in shared memory (GPUs)
  Pipeline prefill_rows[kKvTypes];  // a few query rows per invocation (SIMD CPUs)
  bool use_prefill_rows = false;
  uint32_t prefill_rows_wg = 8, prefill_rows_qt = 2;
  Pipeline decode[kKvTypes];
  Pipeline combine;
  Pipeline window_stats[kKvTypes];
  Pipeline window_votes[kKvTypes];
  Pipeline pool;
  Pipeline complete_words;
  Pipeline topk;
  Pipeline adakv_floor;
  Pipeline adakv_layout;
  Pipeline kv_gather;
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
};
struct AttnPrefillPush {
  uint32_t T, n_head, n_kv, slot0;
  float scale;
  uint32_t window, ring;
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
  uint32_t agg;
};
struct PoolPush {
  uint32_t P, n_kv, kernel_size, avg, ahead;
};
struct CompleteWordsPush {
  uint32_t P, n_kv, reach;
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
  uint32_t n_kv, row_words, max_slots, src_stride, P, window;
};

// ---- ops ----
// src [T, n_kv, hd] f32 -> cache rows offset(h) + base(h) + row0 + t (a ring: offset(h) +
// (row0 + t) % ring)
void op_kv_store(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvType kt, BufferRange src,
                 BufferRange cache, BufferRange heads, uint32_t T, uint32_t n_kv, uint32_t row0, uint32_t ring = 0);
// q [T, n_head, hd] are the appended tokens, rows row0..row0+T-1 after each head's base; o [T, n_head*hd]
void op_attn_prefill(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvType kt, BufferRange q,
                     BufferRange kc, BufferRange vc, BufferRange heads, BufferRange o, uint32_t T, uint32_t n_head,
                     uint32_t n_kv, uint32_t row0, float scale, KvWindow w = {});
// One query per head, q [n_head, hd]; head h holds base(h) + n_appended rows (a window: the last
// `window` of them), at most max_len. Records attn_decode, a barrier and attn_combine; part holds
// attn_partial_floats().
void op_attn_decode(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvType kt, BufferRange q,
                    BufferRange kc, BufferRange vc, BufferRange heads, BufferRange part, BufferRange o, uint32_t n_head,
                    uint32_t n_kv, uint32_t max_len, uint32_t n_appended, float scale, KvWindow w = {});
uint64_t attn_partial_floats(const AttentionKernels& a, uint32_t n_head, uint32_t max_len);

// SnapKV scores. q [n_q, n_head, hd]: the last n_q prompt queries (positions L-n_q ..).
// stats [n_head][n_q][2]; votes [n_kv][P] for prefix positions 0..P-1.
void op_window_stats(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvType kt, BufferRange q,
                     BufferRange kc, BufferRange heads, BufferRange stats, uint32_t L, uint32_t n_q, uint32_t n_head,
                     uint32_t n_kv, float scale);
void op_window_votes(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvType kt, BufferRange q,
                     BufferRange kc, BufferRange stats, BufferRange votes, BufferRange heads, uint32_t L, uint32_t n_q,
                     uint32_t P, uint32_t n_head, uint32_t n_kv, float scale, GqaAgg agg);
void op_pool(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange votes, BufferRange pooled,
             uint32_t P, uint32_t n_kv, uint32_t kernel_size, bool avg, uint32_t ahead = 0);
// out[h][j] = max of scores[h][t] over the positions t of j's word (words[t] = 1: token t continues
// the word of t - 1), at most `reach` either way.
void op_complete_words(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange scores,
                       BufferRange words, BufferRange out, uint32_t P, uint32_t n_kv, uint32_t reach);
// Per segment of seg_len scores: the `count` best positions, ascending, ties to the lower one.
void op_topk(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange scores, BufferRange sel,
             uint32_t segments, uint32_t seg_len, uint32_t count);
void op_adakv_floor(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange scores,
                    BufferRange floor_sel, uint32_t P, uint32_t n_kv, uint32_t floor_count);
void op_adakv_layout(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange sel, BufferRange heads,
                     BufferRange info, uint32_t n_kv, uint32_t P, uint32_t total, uint32_t window, uint32_t room);
// Copies the retained rows (selected prefix positions, then the window) of each head from a
// full cache [n_kv][src_stride rows] into the compacted one described by `heads`.
void op_kv_gather(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange src_k, BufferRange src_v,
                  BufferRange dst_k, BufferRange dst_v, BufferRange sel, BufferRange info, BufferRange heads,
                  uint32_t n_kv, uint32_t row_words, uint32_t max_rows, uint32_t src_stride, uint32_t P,
                  uint32_t window);

}  // namespace snapvk
