#include "host/kernels/attention.h"

#include <algorithm>
#include <cctype>
#include <mutex>
#include <string>

#include "runtime/vk_check.h"
#include "snapvk_limits.h"
#include "snapvk_shaders.h"
#include "host/session/options.h"

namespace snapvk {

const char* kv_type_name(KvType t) { return name_in(names(t), t); }

std::optional<KvType> parse_kv_type(std::string_view name) { return parse_in(names(KvType{}), name); }

uint32_t kv_row_words(KvType t, uint32_t hd) {
  const uint32_t B = hd / 32, paired = (B + 1) / 2;  // blocks; words of their f16 scales in pairs
  switch (t) {
    case KvType::F32: return hd;
    case KvType::F16:
    case KvType::BF16: return hd / 2;
    case KvType::Q8_0: return hd / 4 + paired;  // int8 values, then the scales
    case KvType::Q4_0:
    case KvType::IQ4_NL:
    case KvType::HQ4: return hd / 8 + paired;  // nibbles, then the scales
    case KvType::Q4_1: return hd / 8 + B;      // nibbles, then (d, m) per block
    case KvType::Q5_0: return hd / 8 + B + paired;
    case KvType::Q5_1: return hd / 8 + 2 * B;
    case KvType::HQ3: return hd / 16 + B + paired;  // 2-bit low codes, third bits, scales
  }
  return 0;
}

std::string kv_type_unsupported(KvType t, uint32_t hd) {
  if (!kv_type_blocks(t) || hd % 32 == 0) return {};
  return std::string("KV type ") + kv_type_name(t) + " stores 32-value blocks and this model's head_dim is " +
         std::to_string(hd) + " (f32, f16 or bf16 hold any)";
}

std::string kv_types_name(KvTypes t) {
  return t.k == t.v ? kv_type_name(t.k) : std::string(kv_type_name(t.k)) + "/" + kv_type_name(t.v);
}

void check_kv_types(KvTypes t, uint32_t hd) {
  for (const auto& [type, param] : {std::pair{t.k, opt::kv_type_k}, std::pair{t.v, opt::kv_type_v}})
    if (const std::string why = kv_type_unsupported(type, hd); !why.empty())
      throw Error(ErrorKind::InvalidArgument, why, param);
}

// The kernels made on first use, by name from the embedded list: the pipeline's shape is fixed
// at construction (spec), only the variant differs.
struct AttentionKernels::Lazy {
  Context* ctx = nullptr;
  uint32_t head_dim = 0;
  std::vector<uint32_t> store_spec, prefill_spec, rows_spec, decode_spec, stats_spec, votes_spec, hadamard_spec;
  struct One {
    std::once_flag made;
    Pipeline store, stats, votes;
  } one[kKvTypes];
  struct Pair {
    std::once_flag made;
    Pipeline prefill, prefill_rows, decode;
  } pair[kKvTypes][kKvTypes];
  struct Rotation {
    std::once_flag made;
    Pipeline hadamard, k_center;
  } rotation;
  std::vector<uint32_t> k_center_spec;

  Pipeline make(const std::string& name, uint32_t bindings, uint32_t push, const std::vector<uint32_t>& spec,
                KernelCategory cat = kKernelOther) const {
    for (const spv::Embedded& e : spv::kAll)
      if (name == e.name) return Pipeline(*ctx, PipelineDesc{e.name, e.spirv(), bindings, push, spec, 0, cat});
    throw Error(ErrorKind::Internal, "no embedded kernel " + name);
  }
  void check(KvType t) const {
    SNAPVK_ASSERT(uint32_t(t) < kKvTypes, "no such KV type");
    if (const std::string why = kv_type_unsupported(t, head_dim); !why.empty())
      throw Error(ErrorKind::InvalidArgument, why);
  }
  One& of(KvType t) {
    check(t);
    One& o = one[uint32_t(t)];
    std::call_once(o.made, [&] {
      const std::string n = kv_type_name(t);
      o.store = make("kv_store_" + n, 6, sizeof(KvStorePush), store_spec);
      o.stats = make("window_stats_" + n, 4, sizeof(WindowStatsPush), stats_spec, kKernelScore);
      o.votes = make("window_votes_" + n, 6, sizeof(WindowVotesPush), votes_spec, kKernelScore);
    });
    return o;
  }
  // The rotated types' kernels (their head_dim is the 32-value blocks' too).
  Rotation& rotated() {
    check(KvType::HQ4);
    std::call_once(rotation.made, [&] {
      rotation.hadamard = make("hadamard", 1, sizeof(HadamardPush), hadamard_spec);
      rotation.k_center = make("k_center", 2, sizeof(KCenterPush), k_center_spec);
    });
    return rotation;
  }
  Pair& of(KvTypes t) {
    check(t.k), check(t.v);
    Pair& p = pair[uint32_t(t.k)][uint32_t(t.v)];
    std::call_once(p.made, [&] {
      const std::string n = std::string(kv_type_name(t.k)) + "_" + kv_type_name(t.v);
      p.prefill = make("attn_prefill_" + n, 6, sizeof(AttnPrefillPush), prefill_spec);
      if (head_dim % 4 == 0) p.prefill_rows = make("attn_prefill_rows_" + n, 6, sizeof(AttnPrefillPush), rows_spec);
      p.decode = make("attn_decode_" + n, 6, sizeof(AttnDecodePush), decode_spec);
    });
    return p;
  }
};

const Pipeline& AttentionKernels::store(KvType t) const { return lazy_->of(t).store; }
const Pipeline& AttentionKernels::window_stats(KvType t) const { return lazy_->of(t).stats; }
const Pipeline& AttentionKernels::window_votes(KvType t) const { return lazy_->of(t).votes; }
const Pipeline& AttentionKernels::prefill(KvTypes t) const { return lazy_->of(t).prefill; }
const Pipeline& AttentionKernels::prefill_rows(KvTypes t) const {
  const Pipeline& p = lazy_->of(t).prefill_rows;
  SNAPVK_ASSERT(p, "attn_prefill_rows needs head_dim a multiple of 4");
  return p;
}
const Pipeline& AttentionKernels::decode(KvTypes t) const { return lazy_->of(t).decode; }
const Pipeline& AttentionKernels::hadamard() const { return lazy_->rotated().hadamard; }
const Pipeline& AttentionKernels::k_center() const { return lazy_->rotated().k_center; }

void AttentionKernels::prepare(KvTypes t) const {
  lazy_->of(t);
  lazy_->of(t.k);
  lazy_->of(t.v);
  if (kv_type_rotated(t.k) || kv_type_rotated(t.v)) lazy_->rotated();
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
  subgroup = t.subgroup;
  // Tiles sized to fit shared memory: Q tile + one K/V block + scores.
  const uint32_t shared = c.info().max_shared_memory;
  while (prefill_br > 1 && (prefill_br * hd + prefill_bc * hd + prefill_br * prefill_bc + 3 * prefill_br) * 4 > shared)
    prefill_br /= 2;
  prefill_wg = fit(std::min<uint32_t>(t.row_wg * 2, prefill_br * hd));
  while (decode_chunk > 32 && (g * decode_chunk + g * hd + 64) * 4 > shared) decode_chunk /= 2;
  decode_wg = fit(std::min<uint32_t>(t.row_wg * 2, 256));
  const bool cpu = c.info().type == VK_PHYSICAL_DEVICE_TYPE_CPU;
  votes_wg = fit(cpu ? 64 : 128);
  votes_pass = window_votes_pass_queries(g, votes_qb);
  select_wg = fit(cpu ? 64 : 512);
  select_wide_wg = fit(std::min<uint32_t>(SNAPVK_MAX_WG, c.info().max_workgroup_invocations));
  stats_wg = fit(cpu ? 64 : 256);
  combine_wg = fit(std::min<uint32_t>(64, hd));

  use_prefill_rows = cpu && hd % 4 == 0;
  rotation_block = hd & (~hd + 1);  // the lowest set bit
  lazy_ = std::make_shared<Lazy>();
  Lazy& l = *lazy_;
  l.ctx = &c, l.head_dim = hd;
  l.store_spec = {t.elementwise_wg, hd};
  l.prefill_spec = {prefill_wg, hd, prefill_br, prefill_bc};
  l.rows_spec = {prefill_rows_wg, hd, prefill_rows_qt};
  l.decode_spec = {decode_wg, hd, g, decode_chunk};
  l.stats_spec = {stats_wg, hd};
  l.votes_spec = {votes_wg, hd, g, votes_qb};
  l.hadamard_spec = {hd / 2, hd, rotation_block};
  l.k_center_spec = {t.elementwise_wg};
  combine = make("attn_combine", spv::attn_combine(), 2, sizeof(AttnCombinePush), {combine_wg, hd});
  pool = make("pool", spv::pool(), 2, sizeof(PoolPush), {t.elementwise_wg}, kKernelPool);
  complete_words = make("complete_words", spv::complete_words(), 3, sizeof(CompleteWordsPush), {t.elementwise_wg},
                        kKernelPool);
  topk = make("topk_select", spv::topk_select(), 2, sizeof(TopkPush), {select_wg}, kKernelSelect);
  topk_wide = make("topk_select", spv::topk_select(), 2, sizeof(TopkPush), {select_wide_wg}, kKernelSelect);
  adakv_floor = make("adakv_floor", spv::adakv_floor(), 2, sizeof(AdakvFloorPush), {t.elementwise_wg}, kKernelSelect);
  adakv_layout = make("adakv_layout", spv::adakv_layout(), 3, sizeof(AdakvLayoutPush), {}, kKernelSelect);
  kv_gather = make("kv_gather", spv::kv_gather(), 7, sizeof(KvGatherPush), {t.elementwise_wg}, kKernelGather);
}

void op_kv_store(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvType kt, BufferRange src,
                 BufferRange cache, BufferRange heads, uint32_t T, uint32_t n_kv, uint32_t row0, uint32_t ring,
                 const Buffer* center, BufferRange v_src, BufferRange v_cache) {
  SNAPVK_ASSERT(bool(v_src.buffer) == bool(v_cache.buffer), "kv_store: V's rows without its cache, or the reverse");
  const uint32_t items = kv_type_blocks(kt) ? (a.head_dim / 32 + 1) / 2 : a.head_dim / 2;  // block pairs, value pairs
  uint32_t gx, gy;
  items_grid(k, uint64_t(T) * n_kv * items, gx, gy);
  const bool v = v_src.buffer != nullptr;
  cs.dispatch(a.store(kt), {src, cache, heads, center ? BufferRange(*center) : heads, v ? v_src : src, v ? v_cache : cache},
              KvStorePush{T, n_kv, row0, ring, center != nullptr}, gx, gy, v ? 2 : 1);
}

void op_k_center(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange keys, BufferRange center,
                 uint32_t T, uint32_t n_kv) {
  const uint32_t n = n_kv * a.head_dim;
  cs.dispatch(a.k_center(), {keys, center}, KCenterPush{T, n}, (n + k.tuning.elementwise_wg - 1) / k.tuning.elementwise_wg);
}

namespace {
// Keys one invocation's rows span at most when each sees up to max_len (a window's rows start
// one key apart; the tiled kernel also starts at a block boundary).
uint64_t prefill_span(const AttentionKernels& a, uint32_t max_len) {
  return uint64_t(max_len) + (a.use_prefill_rows ? a.prefill_rows_qt - 1 : a.prefill_br + a.prefill_bc - 2);
}
}  // namespace

uint32_t attn_prefill_pass_keys(const AttentionKernels& a) {
  if (a.prefill_pass) return a.prefill_pass;
  // the loops grow with the keys: the most blocks within the budget, by bisection
  uint32_t lo = 1, hi = uint32_t(kLoopIterationBudget);
  while (lo < hi) {
    const uint32_t mid = (lo + hi + 1) / 2;
    if (attn_prefill_loops(a, a.use_prefill_rows, mid * a.prefill_bc).total() < kLoopIterationBudget)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo * a.prefill_bc;
}

uint32_t attn_prefill_passes(const AttentionKernels& a, uint32_t max_len) {
  const uint32_t pass = attn_prefill_pass_keys(a);
  return uint32_t(std::max<uint64_t>(1, (prefill_span(a, max_len) + pass - 1) / pass));
}

uint64_t attn_prefill_state_floats(const AttentionKernels& a, uint32_t T, uint32_t n_head, uint32_t max_len) {
  return attn_prefill_passes(a, max_len) > 1 ? 2ull * T * n_head : 0;
}

void op_attn_prefill(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvTypes kt, BufferRange q,
                     BufferRange kc, BufferRange vc, BufferRange heads, BufferRange part, BufferRange o, uint32_t T,
                     uint32_t n_head, uint32_t n_kv, uint32_t row0, uint32_t max_len, float scale, KvWindow w) {
  SNAPVK_ASSERT(n_head == n_kv * a.group, "attn_prefill: head counts do not match the kernel's GQA group");
  SNAPVK_ASSERT(!w.ring || w.ring >= w.window + T - 1 || row0 + T <= w.ring,
                "attn_prefill: the ring is too small for the window and batch");
  const uint32_t pass = attn_prefill_pass_keys(a), n_pass = attn_prefill_passes(a, max_len);
  SNAPVK_ASSERT(a.use_prefill_rows || pass % a.prefill_bc == 0, "attn_prefill: a pass must be whole key blocks");
  check_loops(k.ctx.info(),
              attn_prefill_loops(a, a.use_prefill_rows, uint32_t(std::min<uint64_t>(prefill_span(a, max_len), pass))),
              [&] { return "a prompt row that sees " + std::to_string(max_len) + " keys"; });
  const uint64_t state = attn_prefill_state_floats(a, T, n_head, max_len) * 4;
  SNAPVK_ASSERT(!state || (part.size ? part.size : part.buffer->size() - part.offset) >= state,
                "attn_prefill: part too small for the passes' state");
  const uint32_t rows = a.use_prefill_rows ? a.prefill_rows_wg * a.prefill_rows_qt : a.prefill_br;
  const Pipeline& p = a.use_prefill_rows ? a.prefill_rows(kt) : a.prefill(kt);
  for (uint32_t i = 0; i < n_pass; ++i) {
    if (i) cs.barrier();  // the next pass reads what this one carried in o and part
    cs.dispatch(p, {q, kc, vc, o, heads, part},
                AttnPrefillPush{T, n_head, n_kv, row0, scale, w.window, w.ring, pass, i, n_pass}, (T + rows - 1) / rows,
                n_head);
  }
}

uint64_t attn_partial_floats(const AttentionKernels& a, uint32_t n_head, uint32_t max_len) {
  return uint64_t(n_head) * ((uint64_t(max_len) + a.decode_chunk - 1) / a.decode_chunk) * (a.head_dim + 2);
}

uint64_t attn_scratch_floats(uint32_t decode_chunk, uint32_t head_dim, uint32_t n_head, uint32_t n_ctx,
                             uint32_t n_batch) {
  const uint64_t decode = uint64_t(n_head) * ((uint64_t(n_ctx) + decode_chunk - 1) / decode_chunk) * (head_dim + 2);
  return std::max<uint64_t>(decode, 2ull * n_batch * n_head);
}

void op_attn_decode(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvTypes kt, BufferRange q,
                    BufferRange kc, BufferRange vc, BufferRange heads, BufferRange part, BufferRange o, uint32_t n_head,
                    uint32_t n_kv, uint32_t max_len, uint32_t n_appended, float scale, KvWindow w) {
  SNAPVK_ASSERT(n_head == n_kv * a.group, "attn_decode: head counts do not match the kernel's GQA group");
  SNAPVK_ASSERT(max_len >= 1, "attn_decode: empty cache");
  const uint32_t n_split = (max_len + a.decode_chunk - 1) / a.decode_chunk;
  const auto what = [&] { return "a cache of " + std::to_string(max_len) + " rows"; };
  check_loops(k.ctx.info(), attn_decode_loops(a), what);
  check_loops(k.ctx.info(), attn_combine_loops(a, n_split), what);
  cs.dispatch(a.decode(kt), {q, kc, vc, part, heads, o},
              AttnDecodePush{n_appended, n_split, scale, w.window, w.ring}, n_split, n_kv);
  if (n_split == 1) return;  // attn_decode wrote o itself
  cs.barrier();
  cs.dispatch(a.combine, {part, o}, AttnCombinePush{n_split}, n_head);
}

void op_window_stats(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvType kt, BufferRange q,
                     BufferRange kc, BufferRange heads, BufferRange stats, uint32_t L, uint32_t n_q, uint32_t n_head,
                     uint32_t n_kv, float scale) {
  SNAPVK_ASSERT(n_q >= 1 && n_q <= L, "window_stats: window outside the prompt");
  check_loops(k.ctx.info(), window_stats_loops(a, L), [&] { return "a prompt of " + std::to_string(L) + " tokens"; });
  cs.dispatch(a.window_stats(kt), {q, kc, stats, heads}, WindowStatsPush{L, n_q, n_head, n_kv, scale}, n_q,
              n_head);
}

uint32_t window_votes_pass_queries(uint32_t group, uint32_t qb) {
  // window_votes_loops(): 2G + 1 + G (qb + 2) per block of qb queries, within the budget
  const uint64_t G = group, blocks = (kLoopIterationBudget - 1 - (2 * G + 1)) / (G * (qb + 2));
  return uint32_t(blocks * qb);
}

uint32_t window_votes_passes(const AttentionKernels& a, uint32_t n_q) {
  return std::max<uint32_t>(1, (n_q + a.votes_pass - 1) / a.votes_pass);
}

void op_window_votes(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvType kt, BufferRange q,
                     BufferRange kc, BufferRange stats, BufferRange votes, BufferRange heads, BufferRange sums,
                     uint32_t L, uint32_t n_q, uint32_t P, uint32_t n_head, uint32_t n_kv, float scale, GqaAgg agg) {
  SNAPVK_ASSERT(P >= 1 && P <= L, "window_votes: prefix outside the prompt");
  SNAPVK_ASSERT(a.votes_pass > 0, "window_votes: no queries per pass");
  const uint32_t n_pass = window_votes_passes(a, n_q);
  check_loops(k.ctx.info(), window_votes_loops(a.group, a.votes_qb, std::min(n_q, a.votes_pass)),
              [&] { return std::to_string(n_q) + " voting queries"; });
  SNAPVK_ASSERT(n_pass == 1 || (sums.size ? sums.size : sums.buffer->size() - sums.offset) >= uint64_t(n_head) * P * 4,
                "window_votes: sums too small for the passes");
  for (uint32_t i = 0; i < n_pass; ++i) {
    if (i) cs.barrier();  // the next pass reads the sums this one wrote
    const uint32_t q_begin = i * a.votes_pass, q_end = std::min(n_q, q_begin + a.votes_pass);
    cs.dispatch(a.window_votes(kt), {q, kc, stats, votes, heads, sums},
                WindowVotesPush{L, n_q, P, n_head, scale, uint32_t(agg), q_begin, q_end},
                (P + a.votes_wg - 1) / a.votes_wg, n_kv);
  }
}

void op_pool(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange votes, BufferRange pooled,
             uint32_t P, uint32_t n_kv, uint32_t kernel_size, bool avg, uint32_t ahead) {
  SNAPVK_ASSERT(kernel_size % 2 == 1, "pool: kernel size must be odd");
  SNAPVK_ASSERT(a.pool_pass > 0, "pool: no positions per pass");
  const uint32_t window = kernel_size + ahead;  // both at most kMaxContext (KvPolicyOptions::validate)
  check_loops(k.ctx.info(), pool_loops(std::min({window, P, a.pool_pass})), [] { return std::string("pooling"); });
  uint32_t gx, gy;
  items_grid(k, uint64_t(P) * n_kv, gx, gy);
  // positions of the window in passes; the window is clipped to the prompt, so none starts past P
  const uint32_t passes = (std::min(window, P) + a.pool_pass - 1) / a.pool_pass;
  for (uint32_t i = 0; i < passes; ++i) {
    if (i) cs.barrier();  // the next pass starts from this one's result
    const uint32_t w_end = i + 1 == passes ? window : (i + 1) * a.pool_pass;
    cs.dispatch(a.pool, {votes, pooled}, PoolPush{P, n_kv, kernel_size, avg ? 1u : 0u, ahead, i * a.pool_pass, w_end},
                gx, gy);
  }
}

void op_complete_words(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange scores,
                       BufferRange words, BufferRange out, uint32_t P, uint32_t n_kv, uint32_t reach) {
  SNAPVK_ASSERT(a.words_pass > 0, "complete_words: no steps per pass");
  const uint32_t steps = std::min(reach, P);  // a word ends within the prompt
  check_loops(k.ctx.info(), complete_words_loops(std::min(steps, a.words_pass)),
              [] { return std::string("completing words"); });
  uint32_t gx, gy;
  items_grid(k, uint64_t(P) * n_kv, gx, gy);
  const uint32_t passes = std::max(1u, (steps + a.words_pass - 1) / a.words_pass);
  for (uint32_t i = 0; i < passes; ++i) {
    if (i) cs.barrier();  // the next pass starts from this one's result
    const uint32_t r_begin = i * a.words_pass;
    cs.dispatch(a.complete_words, {scores, words, out},
                CompleteWordsPush{P, n_kv, r_begin, std::min(steps, r_begin + a.words_pass)}, gx, gy);
  }
}

std::vector<uint32_t> word_numbers(std::span<const uint32_t> continuations) {
  std::vector<uint32_t> n(continuations.size());
  for (size_t t = 1; t < n.size(); ++t) n[t] = n[t - 1] + (continuations[t] ? 0 : 1);
  return n;
}

uint32_t topk_workgroup(const AttentionKernels& a, uint32_t seg_len, uint32_t count) {
  // each invocation walks its share of the segment six times
  return topk_loops(a.select_wg, seg_len, count).total() < kLoopIterationBudget ? a.select_wg : a.select_wide_wg;
}

void op_topk(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange scores, BufferRange sel,
             uint32_t segments, uint32_t seg_len, uint32_t count) {
  SNAPVK_ASSERT(count <= seg_len, "topk: count larger than the segment");
  const uint32_t wg = topk_workgroup(a, seg_len, count);
  check_loops(k.ctx.info(), topk_loops(wg, seg_len, count),
              [&] { return "ranking " + std::to_string(seg_len) + " scores"; });
  cs.dispatch(wg == a.select_wg ? a.topk : a.topk_wide, {scores, sel}, TopkPush{seg_len, count}, segments);
}

void op_adakv_floor(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange scores,
                    BufferRange floor_sel, uint32_t P, uint32_t n_kv, uint32_t floor_count) {
  uint32_t gx, gy;
  items_grid(k, uint64_t(n_kv) * floor_count, gx, gy);
  SNAPVK_ASSERT(gy == 1, "adakv_floor: too many entries");
  cs.dispatch(a.adakv_floor, {scores, floor_sel}, AdakvFloorPush{P, n_kv, floor_count}, gx);
}

void op_adakv_layout(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange sel, BufferRange heads,
                     BufferRange info, uint32_t n_kv, uint32_t P, uint32_t total, uint32_t window, uint32_t room) {
  check_loops(k.ctx.info(), adakv_layout_loops(n_kv, total), [&] { return std::to_string(n_kv) + " KV heads"; });
  cs.dispatch(a.adakv_layout, {sel, heads, info}, AdakvLayoutPush{n_kv, P, total, window, room}, 1);
}

void op_kv_gather(CommandStream& cs, const Kernels& k, const AttentionKernels& a, BufferRange src_k, BufferRange src_v,
                  BufferRange dst_k, BufferRange dst_v, BufferRange sel, BufferRange info, BufferRange heads,
                  uint32_t n_kv, KvTypes types, uint32_t max_rows, uint32_t src_stride, uint32_t P,
                  uint32_t window) {
  const uint32_t kw = kv_row_words(types.k, a.head_dim), vw = kv_row_words(types.v, a.head_dim);
  uint32_t gx, gy;
  items_grid(k, uint64_t(n_kv) * max_rows * std::max(kw, vw), gx, gy);
  cs.dispatch(a.kv_gather, {src_k, src_v, dst_k, dst_v, sel, info, heads},
              KvGatherPush{n_kv, kw, vw, max_rows, src_stride, P, window}, gx, gy);
}

void op_kv_rotate(CommandStream& cs, const AttentionKernels& a, BufferRange x, uint32_t rows, bool inverse) {
  const uint32_t gx = std::min<uint32_t>(rows, 65535), gy = (rows + gx - 1) / gx;
  cs.dispatch(a.hadamard(), {x}, HadamardPush{rows, inverse}, gx, gy);
}

// ---- loops per invocation: one entry per rolled loop of each shader, in its source's order ----

namespace {
uint64_t cdiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }
}  // namespace

KernelLoops kv_store_loops(KvType kt) {
  KernelLoops l("kv_store");
  if (kt == KvType::HQ4 || kt == KvType::HQ3)  // store_block's scale candidates, for each of the two blocks
    return l.add("a block's scale candidates", 6 + 1).add("the second block's", 6 + 1);
  if (kt != KvType::Q8_0) return l;
  // store_block, inlined for each of the two 32-value blocks an invocation stores
  l.add("a block's largest value", 32 + 1).add("its words", 8 + 1).add("a word's bytes", 4 + 1, 8);
  return l.add("the second block's largest value", 32 + 1).add("its words", 8 + 1).add("a word's bytes", 4 + 1, 8);
}

KernelLoops k_center_loops() { return KernelLoops("k_center").add("the first keys", SNAPVK_K_CENTER_ROWS + 1); }

KernelLoops attn_prefill_loops(const AttentionKernels& a, bool rows_kernel, uint32_t keys) {
  if (rows_kernel) return KernelLoops("attn_prefill_rows").add("keys of the pass", uint64_t(keys) + 1);
  const uint32_t wg = a.prefill_wg, br = a.prefill_br, bc = a.prefill_bc, hd = a.head_dim;
  const uint64_t blocks = cdiv(keys, bc), scores = cdiv(uint64_t(br) * bc, wg);
  const uint32_t du = hd % 8 == 0 ? 8 : hd % 4 == 0 ? 4 : 2;  // the shader's DU
  return KernelLoops("attn_prefill")
      .add("loading the query tile", strided(uint64_t(br) * hd, wg))
      .add("rows' max and sum so far", strided(br, wg))
      .add("key blocks of the pass", blocks + 1)
      .add("loading a K block", strided(uint64_t(bc) * hd / 2, wg), blocks)
      .add("a block's scores", strided(uint64_t(br) * bc, wg), blocks)
      .add("a score's head_dim", hd / du + 1, blocks * scores)
      .add("softmax of a block's rows", strided(br, wg), blocks)
      .add("loading a V block", strided(uint64_t(bc) * hd / 2, wg), blocks)
      .add("rows' max and sum carried", strided(br, wg));
}

KernelLoops attn_decode_loops(const AttentionKernels& a) {
  const uint32_t wg = a.decode_wg, G = a.group, hd = a.head_dim, chunk = a.decode_chunk;
  const uint32_t ds = hd % 4 == 0 ? 4 : 2;  // the shader's DS: values per K/V load
  return KernelLoops("attn_decode")
      .add("loading the group's queries", strided(uint64_t(G) * hd, wg))
      .add("the chunk's keys", strided(chunk, wg))
      .add("a key's head_dim", hd / ds + 1, cdiv(chunk, wg))
      .add("max over the chunk", strided(chunk, wg), G)
      .add("workgroup max", subgroups_loop(wg, a.subgroup), G)
      .add("softmax over the chunk", strided(chunk, wg), G)
      .add("workgroup sum", subgroups_loop(wg, a.subgroup), G)
      .add("output values", strided(uint64_t(G) * hd / ds, wg))
      .add("the chunk's values", uint64_t(chunk) + 1, cdiv(uint64_t(G) * hd / ds, wg));
}

KernelLoops attn_combine_loops(const AttentionKernels& a, uint32_t n_split) {
  const uint32_t wg = a.combine_wg;
  return KernelLoops("attn_combine")
      .add("max over the splits", uint64_t(n_split) + 1)
      .add("output values", strided(a.head_dim, wg))
      .add("the splits", uint64_t(n_split) + 1, cdiv(a.head_dim, wg));
}

KernelLoops window_stats_loops(const AttentionKernels& a, uint32_t L) {
  const uint32_t wg = a.stats_wg;
  return KernelLoops("window_stats")
      .add("loading the query", strided(a.head_dim, wg))
      .add("the keys it sees", strided(L, wg))
      .add("workgroup max", subgroups_loop(wg, a.subgroup))
      .add("workgroup sum", subgroups_loop(wg, a.subgroup));
}

KernelLoops window_votes_loops(uint32_t group, uint32_t qb, uint32_t queries) {
  const uint64_t blocks = cdiv(queries, qb);
  return KernelLoops("window_votes")
      .add("the group's query heads", uint64_t(group) + 1)
      .add("blocks of the pass's queries", blocks + 1, group)
      .add("a block's queries", uint64_t(qb) + 1, group * blocks);
}

KernelLoops pool_loops(uint32_t window) { return KernelLoops("pool").add("the pass's window", uint64_t(window) + 1); }

KernelLoops complete_words_loops(uint32_t steps) {
  return KernelLoops("complete_words")
      .add("back towards the word's start", uint64_t(steps) + 1)
      .add("on towards its end", uint64_t(steps) + 1);
}

KernelLoops topk_loops(uint32_t wg, uint32_t seg_len, uint32_t count) {
  const bool all = count >= seg_len;  // everything kept: the first loop alone runs
  // The histogram strides over the segment and the share loops walk an invocation's slice, both
  // SNAPVK_TOPK_UNROLL keys per iteration.
  const uint64_t per = cdiv(seg_len, wg), U = SNAPVK_TOPK_UNROLL;
  const uint64_t strides = all ? 0 : strided(seg_len, uint64_t(wg) * U), share = all ? 0 : cdiv(per, U) + 1;
  const uint64_t passes = all ? 0 : 4;
  return KernelLoops("topk_select")
      .add("everything kept", all ? strided(seg_len, wg) : 0)
      .add("radix passes", all ? 0 : passes + 1)
      .add("clearing the histogram", strided(256, wg), passes)
      .add("the histogram", strides, passes)
      .add("finding the bin", 256 + 1, passes)
      .add("counting the share", share)
      .add("scanning the counts", all ? 0 : uint64_t(wg) + 1)
      .add("taking the share", share);
}

KernelLoops adakv_layout_loops(uint32_t n_kv, uint32_t total) {
  uint64_t halvings = 1;
  while ((uint64_t(1) << halvings) <= total) ++halvings;  // binary search steps over total entries
  return KernelLoops("adakv_layout")
      .add("KV heads", uint64_t(n_kv) + 1)
      .add("where a head starts", halvings + 1, n_kv)
      .add("where it ends", halvings + 1, n_kv);
}

}  // namespace snapvk
