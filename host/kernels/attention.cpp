#include "host/kernels/attention.h"

#include <algorithm>
#include <cctype>
#include <string>

#include "runtime/vk_check.h"
#include "snapvk_limits.h"
#include "snapvk_shaders.h"

namespace snapvk {

const char* kv_type_name(KvType t) { return name_in(names(t), t); }

std::optional<KvType> parse_kv_type(std::string_view name) { return parse_in(names(KvType{}), name); }

uint32_t kv_row_words(KvType t, uint32_t hd) {
  switch (t) {
    case KvType::F32: return hd;
    case KvType::F16: return hd / 2;
    case KvType::Q8_0: return hd / 4 + (hd / 32 + 1) / 2;  // int8 values, then f16 scales in pairs
  }
  return 0;
}

AttentionKernels::AttentionKernels(Context& c, const Tuning& t, uint32_t hd, uint32_t g) : head_dim(hd), group(g) {
  SNAPVK_ASSERT(hd % 2 == 0 && hd <= SNAPVK_MAX_HEAD_DIM,
                "head_dim must be even and at most " + std::to_string(SNAPVK_MAX_HEAD_DIM));
  SNAPVK_ASSERT(g >= 1 && g <= 16, "GQA group size must be 1..16");
  auto make = [&](const char* name, std::span<const uint32_t> spv, uint32_t bindings, uint32_t push,
                  std::vector<uint32_t> spec, KernelCategory cat = kKernelOther) {
    return Pipeline(c, PipelineDesc{name, spv, bindings, push, std::move(spec), 0, cat});
  };
  auto fit = [&](uint32_t want) {  // a multiple of the subgroup, within device and reduction limits
    const uint32_t most = std::min({want, t.subgroup * 64u, c.info().max_workgroup_invocations});
    return std::max(t.subgroup, most / t.subgroup * t.subgroup);
  };
  // Tiles sized to fit shared memory: Q tile + one K/V block + scores.
  const uint32_t shared = c.info().max_shared_memory;
  while (prefill_br > 1 && (prefill_br * hd + prefill_bc * hd + prefill_br * prefill_bc + 3 * prefill_br) * 4 > shared)
    prefill_br /= 2;
  const uint32_t prefill_wg = fit(std::min<uint32_t>(t.row_wg * 2, prefill_br * hd));
  while (decode_chunk > 32 && (g * decode_chunk + g * hd + 64) * 4 > shared) decode_chunk /= 2;
  const uint32_t decode_wg = fit(std::min<uint32_t>(t.row_wg * 2, 256));
  const bool cpu = c.info().type == VK_PHYSICAL_DEVICE_TYPE_CPU;
  votes_wg = fit(cpu ? 64 : 128);
  select_wg = fit(cpu ? 64 : 512);
  const uint32_t votes_qb = 16;

  const std::span<const uint32_t> store_spv[] = {spv::kv_store_f32(), spv::kv_store_f16(), spv::kv_store_q8_0()};
  const std::span<const uint32_t> prefill_spv[] = {spv::attn_prefill_f32(), spv::attn_prefill_f16(),
                                                   spv::attn_prefill_q8_0()};
  const std::span<const uint32_t> prefill_rows_spv[] = {spv::attn_prefill_rows_f32(), spv::attn_prefill_rows_f16(),
                                                        spv::attn_prefill_rows_q8_0()};
  use_prefill_rows = cpu && hd % 4 == 0;
  const std::span<const uint32_t> decode_spv[] = {spv::attn_decode_f32(), spv::attn_decode_f16(),
                                                  spv::attn_decode_q8_0()};
  const std::span<const uint32_t> stats_spv[] = {spv::window_stats_f32(), spv::window_stats_f16(),
                                                 spv::window_stats_q8_0()};
  const std::span<const uint32_t> votes_spv[] = {spv::window_votes_f32(), spv::window_votes_f16(),
                                                 spv::window_votes_q8_0()};
  for (uint32_t i = 0; i < kKvTypes; ++i) {
    if (KvType(i) == KvType::Q8_0 && hd % 32) continue;  // q8_0 rows are whole 32-value blocks
    kv_store[i] = make("kv_store", store_spv[i], 3, sizeof(KvStorePush), {t.elementwise_wg, hd});
    prefill[i] =
        make("attn_prefill", prefill_spv[i], 5, sizeof(AttnPrefillPush), {prefill_wg, hd, prefill_br, prefill_bc});
    if (hd % 4 == 0)
      prefill_rows[i] = make("attn_prefill_rows", prefill_rows_spv[i], 5, sizeof(AttnPrefillPush),
                             {prefill_rows_wg, hd, prefill_rows_qt});
    decode[i] = make("attn_decode", decode_spv[i], 5, sizeof(AttnDecodePush), {decode_wg, hd, g, decode_chunk});
    window_stats[i] =
        make("window_stats", stats_spv[i], 4, sizeof(WindowStatsPush), {fit(cpu ? 64 : 256), hd}, kKernelScore);
    window_votes[i] =
        make("window_votes", votes_spv[i], 5, sizeof(WindowVotesPush), {votes_wg, hd, g, votes_qb}, kKernelScore);
  }
  combine =
      make("attn_combine", spv::attn_combine(), 2, sizeof(AttnCombinePush), {fit(std::min<uint32_t>(64, hd)), hd});
  pool = make("pool", spv::pool(), 2, sizeof(PoolPush), {t.elementwise_wg}, kKernelPool);
  complete_words = make("complete_words", spv::complete_words(), 3, sizeof(CompleteWordsPush), {t.elementwise_wg},
                        kKernelPool);
  topk = make("topk_select", spv::topk_select(), 2, sizeof(TopkPush), {select_wg}, kKernelSelect);
  adakv_floor = make("adakv_floor", spv::adakv_floor(), 2, sizeof(AdakvFloorPush), {t.elementwise_wg}, kKernelSelect);
  adakv_layout = make("adakv_layout", spv::adakv_layout(), 3, sizeof(AdakvLayoutPush), {}, kKernelSelect);
  kv_gather = make("kv_gather", spv::kv_gather(), 7, sizeof(KvGatherPush), {t.elementwise_wg}, kKernelGather);
}

namespace {
const Pipeline& variant(const Pipeline (&p)[kKvTypes], KvType kt, const AttentionKernels& a) {
  const Pipeline& v = p[uint32_t(kt)];
  if (!v)
    throw Error(ErrorKind::InvalidArgument,
                std::string("KV type ") + kv_type_name(kt) + " needs head_dim a multiple of 32 (this model has " +
                    std::to_string(a.head_dim) + ")");
  return v;
}
}  // namespace

void op_kv_store(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvType kt, BufferRange src,
                 BufferRange cache, BufferRange heads, uint32_t T, uint32_t n_kv, uint32_t row0, uint32_t ring) {
  const uint32_t items = kt == KvType::Q8_0 ? (a.head_dim / 32 + 1) / 2 : a.head_dim / 2;
  uint32_t gx, gy;
  items_grid(k, uint64_t(T) * n_kv * items, gx, gy);
  cs.dispatch(variant(a.kv_store, kt, a), {src, cache, heads}, KvStorePush{T, n_kv, row0, ring}, gx, gy);
}

void op_attn_prefill(CommandStream& cs, const Kernels&, const AttentionKernels& a, KvType kt, BufferRange q,
                     BufferRange kc, BufferRange vc, BufferRange heads, BufferRange o, uint32_t T, uint32_t n_head,
                     uint32_t n_kv, uint32_t row0, float scale, KvWindow w) {
  SNAPVK_ASSERT(n_head == n_kv * a.group, "attn_prefill: head counts do not match the kernel's GQA group");
  SNAPVK_ASSERT(!w.ring || w.ring >= w.window + T - 1 || row0 + T <= w.ring,
                "attn_prefill: the ring is too small for the window and batch");
  if (a.use_prefill_rows) {
    const uint32_t rows = a.prefill_rows_wg * a.prefill_rows_qt;
    cs.dispatch(variant(a.prefill_rows, kt, a), {q, kc, vc, o, heads},
                AttnPrefillPush{T, n_head, n_kv, row0, scale, w.window, w.ring}, (T + rows - 1) / rows, n_head);
    return;
  }
  cs.dispatch(variant(a.prefill, kt, a), {q, kc, vc, o, heads},
              AttnPrefillPush{T, n_head, n_kv, row0, scale, w.window, w.ring}, (T + a.prefill_br - 1) / a.prefill_br,
              n_head);
}

uint64_t attn_partial_floats(const AttentionKernels& a, uint32_t n_head, uint32_t max_len) {
  return uint64_t(n_head) * ((uint64_t(max_len) + a.decode_chunk - 1) / a.decode_chunk) * (a.head_dim + 2);
}

void op_attn_decode(CommandStream& cs, const Kernels&, const AttentionKernels& a, KvType kt, BufferRange q,
                    BufferRange kc, BufferRange vc, BufferRange heads, BufferRange part, BufferRange o, uint32_t n_head,
                    uint32_t n_kv, uint32_t max_len, uint32_t n_appended, float scale, KvWindow w) {
  SNAPVK_ASSERT(n_head == n_kv * a.group, "attn_decode: head counts do not match the kernel's GQA group");
  SNAPVK_ASSERT(max_len >= 1, "attn_decode: empty cache");
  const uint32_t n_split = (max_len + a.decode_chunk - 1) / a.decode_chunk;
  cs.dispatch(variant(a.decode, kt, a), {q, kc, vc, part, heads},
              AttnDecodePush{n_appended, n_split, scale, w.window, w.ring}, n_split, n_kv);
  cs.barrier();
  cs.dispatch(a.combine, {part, o}, AttnCombinePush{n_split}, n_head);
}

void op_window_stats(CommandStream& cs, const Kernels&, const AttentionKernels& a, KvType kt, BufferRange q,
                     BufferRange kc, BufferRange heads, BufferRange stats, uint32_t L, uint32_t n_q, uint32_t n_head,
                     uint32_t n_kv, float scale) {
  SNAPVK_ASSERT(n_q >= 1 && n_q <= L, "window_stats: window outside the prompt");
  cs.dispatch(variant(a.window_stats, kt, a), {q, kc, stats, heads}, WindowStatsPush{L, n_q, n_head, n_kv, scale}, n_q,
              n_head);
}

void op_window_votes(CommandStream& cs, const Kernels&, const AttentionKernels& a, KvType kt, BufferRange q,
                     BufferRange kc, BufferRange stats, BufferRange votes, BufferRange heads, uint32_t L, uint32_t n_q,
                     uint32_t P, uint32_t n_head, uint32_t n_kv, float scale, GqaAgg agg) {
  SNAPVK_ASSERT(P >= 1 && P <= L, "window_votes: prefix outside the prompt");
  cs.dispatch(variant(a.window_votes, kt, a), {q, kc, stats, votes, heads},
              WindowVotesPush{L, n_q, P, n_head, scale, uint32_t(agg)}, (P + a.votes_wg - 1) / a.votes_wg, n_kv);
}

void op_pool(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange votes, BufferRange pooled,
             uint32_t P, uint32_t n_kv, uint32_t kernel_size, bool avg, uint32_t ahead) {
  SNAPVK_ASSERT(kernel_size % 2 == 1, "pool: kernel size must be odd");
  uint32_t gx, gy;
  items_grid(k, uint64_t(P) * n_kv, gx, gy);
  cs.dispatch(a.pool, {votes, pooled}, PoolPush{P, n_kv, kernel_size, avg ? 1u : 0u, ahead}, gx, gy);
}

void op_complete_words(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange scores,
                       BufferRange words, BufferRange out, uint32_t P, uint32_t n_kv, uint32_t reach) {
  uint32_t gx, gy;
  items_grid(k, uint64_t(P) * n_kv, gx, gy);
  cs.dispatch(a.complete_words, {scores, words, out}, CompleteWordsPush{P, n_kv, reach}, gx, gy);
}

void op_topk(CommandStream& cs, const Kernels&, const AttentionKernels& a, BufferRange scores, BufferRange sel,
             uint32_t segments, uint32_t seg_len, uint32_t count) {
  SNAPVK_ASSERT(count <= seg_len, "topk: count larger than the segment");
  cs.dispatch(a.topk, {scores, sel}, TopkPush{seg_len, count}, segments);
}

void op_adakv_floor(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange scores,
                    BufferRange floor_sel, uint32_t P, uint32_t n_kv, uint32_t floor_count) {
  uint32_t gx, gy;
  items_grid(k, uint64_t(n_kv) * floor_count, gx, gy);
  SNAPVK_ASSERT(gy == 1, "adakv_floor: too many entries");
  cs.dispatch(a.adakv_floor, {scores, floor_sel}, AdakvFloorPush{P, n_kv, floor_count}, gx);
}

void op_adakv_layout(CommandStream& cs, const Kernels&, const AttentionKernels& a, BufferRange sel, BufferRange heads,
                     BufferRange info, uint32_t n_kv, uint32_t P, uint32_t total, uint32_t window, uint32_t room) {
  cs.dispatch(a.adakv_layout, {sel, heads, info}, AdakvLayoutPush{n_kv, P, total, window, room}, 1);
}

void op_kv_gather(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange src_k, BufferRange src_v,
                  BufferRange dst_k, BufferRange dst_v, BufferRange sel, BufferRange info, BufferRange heads,
                  uint32_t n_kv, uint32_t row_words, uint32_t max_rows, uint32_t src_stride, uint32_t P,
                  uint32_t window) {
  uint32_t gx, gy;
  items_grid(k, uint64_t(n_kv) * max_rows * row_words, gx, gy);
  cs.dispatch(a.kv_gather, {src_k, src_v, dst_k, dst_v, sel, info, heads},
              KvGatherPush{n_kv, row_words, max_rows, src_stride, P, window}, gx, gy);
}

}  // namespace snapvk
