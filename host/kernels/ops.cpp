#include "host/kernels/ops.h"

#include <algorithm>
#include <numeric>
#include <string>

#include "runtime/vk_check.h"
#include "snapvk_limits.h"
#include "snapvk_shaders.h"

namespace snapvk {

Tuning Tuning::for_device(const DeviceInfo& info) {
  Tuning t;
  t.subgroup = std::max<uint32_t>(1, info.subgroup_size);
  auto fit = [&](uint32_t want) {  // a multiple of the subgroup, within device and reduction limits
    uint32_t wg = std::min({want, info.max_workgroup_invocations, t.subgroup * 64u});
    return std::max(t.subgroup, wg / t.subgroup * t.subgroup);
  };
  if (info.type == VK_PHYSICAL_DEVICE_TYPE_CPU) {
    // lavapipe runs a workgroup as one thread looping over SIMD-width subgroups: few, wide
    // subgroups per workgroup and many workgroups keep all cores busy with little barrier cost.
    t.elementwise_wg = fit(64);
    t.row_wg = fit(32);
    // matvec: one subgroup per workgroup (no barrier) over 8 rows, and 64-bit loads, since
    // lavapipe's load cost follows the number of components loaded.
    t.matvec_wg = fit(8);
    t.matvec_rows = 8;
    t.matvec_int64 = true;
    t.matmul_rows = true;
  } else {
    t.elementwise_wg = fit(256);
    t.row_wg = fit(256);
    t.matvec_wg = fit(64);
    t.matvec_rows = 4;
  }
  t.elementwise_wg = fit(t.elementwise_wg);
  // a matmul tile's workgroup is (bm / 4) * (bn / 4) invocations: within the device's limit
  while ((t.matmul_bm / 4) * (t.matmul_bn / 4) > info.max_workgroup_invocations && t.matmul_bn > 8)
    (t.matmul_bn >= t.matmul_bm ? t.matmul_bn : t.matmul_bm) /= 2;
  return t;
}

WeightKind weight_kind(GgmlType type) {
  switch (type) {
    case GgmlType::F32: return kWeightF32;
    case GgmlType::F16: return kWeightF16;
    case GgmlType::BF16: return kWeightBF16;
    case GgmlType::Q8_0: return kWeightQ8_0;
    case GgmlType::Q4_0: return kWeightQ4_0;
    case GgmlType::Q4_K: return kWeightQ4_K;
    case GgmlType::Q6_K: return kWeightQ6_K;
    case GgmlType::Q4_1: return kWeightQ4_1;
    case GgmlType::Q5_0: return kWeightQ5_0;
    case GgmlType::Q5_1: return kWeightQ5_1;
    case GgmlType::Q2_K: return kWeightQ2_K;
    case GgmlType::Q3_K: return kWeightQ3_K;
    case GgmlType::Q5_K: return kWeightQ5_K;
    case GgmlType::IQ4_NL: return kWeightIQ4_NL;
    case GgmlType::IQ4_XS: return kWeightIQ4_XS;
    default: throw Error(ErrorKind::BadModel, std::string("no GPU kernel for weight type ") + type_name(type));
  }
}

namespace {
Pipeline make(Context& ctx, const char* name, std::span<const uint32_t> spv, uint32_t bindings, uint32_t push,
              std::vector<uint32_t> spec) {
  return Pipeline(ctx, PipelineDesc{name, spv, bindings, push, std::move(spec), 0});
}
}  // namespace

Kernels::Kernels(Context& c) : ctx(c), tuning(Tuning::for_device(c.info())) {
  const Tuning& t = tuning;
  add = make(c, "add", spv::add(), 3, sizeof(BinaryPush), {t.elementwise_wg});
  mul = make(c, "mul", spv::mul(), 3, sizeof(BinaryPush), {t.elementwise_wg});
  rms_norm = make(c, "rms_norm", spv::rms_norm(), 3, sizeof(RmsNormPush), {t.row_wg});
  rope = make(c, "rope", spv::rope(), 3, sizeof(RopePush), {t.elementwise_wg});
  swiglu = make(c, "swiglu", spv::swiglu(), 3, sizeof(UnaryPush), {t.elementwise_wg});
  geglu = make(c, "geglu", spv::geglu(), 3, sizeof(UnaryPush), {t.elementwise_wg});
  softcap = make(c, "softcap", spv::softcap(), 1, sizeof(SoftcapPush), {t.elementwise_wg});
}

WeightKernels& Kernels::weights(WeightKind kind) const {
  SNAPVK_ASSERT(kind < kWeightKinds, "weights: no such weight kind");
  std::call_once(weights_made_[kind], [&] {
    const Tuning& t = tuning;
    const uint32_t mm_wg = (t.matmul_bm / 4) * (t.matmul_bn / 4);
    // matvec: the third constant says the workgroup is one subgroup, so the reduction needs no barrier.
    const uint32_t mv_one_subgroup = ctx.info().min_subgroup_size > 0 && t.matvec_wg <= ctx.info().min_subgroup_size;
    // (constants 3-5: matvec.comp's NORM_X, ADD_Y, GLU)
    auto mv_spec = [&](uint32_t norm, uint32_t add, Glu glu) {
      return std::vector<uint32_t>{t.matvec_wg, t.matvec_rows, mv_one_subgroup, norm, add, uint32_t(glu)};
    };
    const bool mv_int64 = t.matvec_int64 && ctx.info().int64;
    const std::vector<uint32_t> mm_spec = {mm_wg, t.matmul_bm, t.matmul_bn, t.matmul_bk};
    // One row per weight kind, in WeightKind order.
    struct Variant {
      const char *mv_name, *mm_name;
      std::span<const uint32_t> mv, mv_i64, mm, mm_rows, rows;
    };
#define SNAPVK_VARIANT(w)                                                                                      \
  Variant {                                                                                                    \
    "matvec_" #w "_f32", "matmul_" #w "_f32", spv::matvec_##w##_f32(), spv::matvec_##w##_f32_i64(),            \
        spv::matmul_##w##_f32(), spv::matmul_rows_##w##_f32(), spv::get_rows_##w()                              \
  }
    const Variant variants[] = {
        SNAPVK_VARIANT(f32),  SNAPVK_VARIANT(f16),  SNAPVK_VARIANT(bf16), SNAPVK_VARIANT(q8_0),   SNAPVK_VARIANT(q4_0),
        SNAPVK_VARIANT(q4_k), SNAPVK_VARIANT(q6_k), SNAPVK_VARIANT(q4_1), SNAPVK_VARIANT(q5_0),   SNAPVK_VARIANT(q5_1),
        SNAPVK_VARIANT(q2_k), SNAPVK_VARIANT(q3_k), SNAPVK_VARIANT(q5_k), SNAPVK_VARIANT(iq4_nl), SNAPVK_VARIANT(iq4_xs),
    };
#undef SNAPVK_VARIANT
    static_assert(std::size(variants) == kWeightKinds);
    const Variant& v = variants[kind];
    WeightKernels& w = weights_[kind];
    const std::span<const uint32_t> mv = mv_int64 ? v.mv_i64 : v.mv;
    w.matvec = make(ctx, v.mv_name, mv, 4, sizeof(MatvecPush), mv_spec(0, 0, Glu::None));
    w.matvec_norm = make(ctx, v.mv_name, mv, 4, sizeof(MatvecPush), mv_spec(1, 0, Glu::None));
    w.matvec_add = make(ctx, v.mv_name, mv, 4, sizeof(MatvecPush), mv_spec(0, 1, Glu::None));
    if (t.matvec_rows % 2 == 0) {  // a GLU pairs the workgroup's rows
      w.matvec_norm_swiglu = make(ctx, v.mv_name, mv, 4, sizeof(MatvecPush), mv_spec(1, 0, Glu::Silu));
      w.matvec_norm_geglu = make(ctx, v.mv_name, mv, 4, sizeof(MatvecPush), mv_spec(1, 0, Glu::Gelu));
    }
    w.matmul = make(ctx, v.mm_name, v.mm, 3, sizeof(MatmulPush), mm_spec);
    w.matmul_rows = make(ctx, v.mm_name, v.mm_rows, 3, sizeof(MatmulPush), {t.matmul_rows_wg, t.matmul_rows_tm});
    if (t.matmul_rows)
      for (uint32_t i = 0; i < 2; ++i)
        if ((2u << i) < t.matmul_rows_tm)
          w.matmul_rows_few[i] = make(ctx, v.mm_name, v.mm_rows, 3, sizeof(MatmulPush), {t.matmul_rows_wg, 2u << i});
    w.get_rows = make(ctx, "get_rows", v.rows, 3, sizeof(GetRowsPush), {t.row_wg});
  });
  return weights_[kind];
}

// Grid for one invocation per item (elementwise kernels index with a 2-D grid).
void items_grid(const Kernels& k, uint64_t items, uint32_t& gx, uint32_t& gy) {
  grid_2d(k.ctx.info(), (items + k.tuning.elementwise_wg - 1) / k.tuning.elementwise_wg, gx, gy);
}

namespace {
// Binding offsets are multiples of this (and of 4: the shaders address 32-bit words).
uint64_t offset_alignment(const DeviceInfo& info) {
  return std::max<uint64_t>(4, info.min_storage_buffer_offset_alignment);
}

// Rows per binding of a weight matrix larger than one binding may be: slices start at multiples
// of a step that keeps the weight offset (rows of rb bytes) and an f32-per-row output offset aligned;
// a slice's rows and its f32 outputs each fit in max_range.
uint64_t slice_rows(const DeviceInfo& info, uint64_t max_range, uint64_t rb) {
  const uint64_t align = offset_alignment(info);
  const uint64_t step = std::lcm(align / std::gcd(align, rb), align / std::gcd(align, uint64_t(4)));
  const uint64_t slice = (max_range - 4) / std::max<uint64_t>(rb, 4) / step * step;  // ranges round up to 4 bytes
  SNAPVK_ASSERT(slice > 0, "weight rows too long to split within maxStorageBufferRange");
  return slice;
}

// Bytes one binding of a matvec/matmul operand may span (lowered by the tuning to test the split).
uint64_t max_binding_range(const Kernels& k) {
  const uint64_t device = k.ctx.info().max_storage_buffer_range;
  return k.tuning.max_binding_range ? std::min(k.tuning.max_binding_range, device) : device;
}
}  // namespace

void op_get_rows(CommandStream& cs, const Kernels& k, GgmlType wt, BufferRange table, BufferRange ids, BufferRange y,
                 uint32_t rows, uint32_t n) {
  SNAPVK_ASSERT(n % traits_of(wt).block_size == 0, "get_rows: row length is not a multiple of the block size");
  const DeviceInfo& info = k.ctx.info();
  check_loops(info, get_rows_loops(k, n), [&] { return "rows of " + std::to_string(n); });
  uint32_t gx, gy;
  grid_2d(info, rows, gx, gy);
  SNAPVK_ASSERT(table.buffer && table.offset <= table.buffer->size(), "get_rows: table range outside its buffer");
  const uint64_t rb = row_bytes(wt, n), t_size = table.size ? table.size : table.buffer->size() - table.offset;
  const uint64_t t_rows = t_size / rb;
  SNAPVK_ASSERT(t_rows > 0 && t_rows <= UINT32_MAX, "get_rows: table holds no whole row");
  if (t_size <= info.max_storage_buffer_range) {
    cs.dispatch(k.weights(weight_kind(wt)).get_rows, {table, ids, y}, GetRowsPush{n, rows, 0, uint32_t(t_rows)}, gx, gy);
    return;
  }
  // A table larger than one binding (Gemma 3's 262144-token embeddings: 178 MB against lavapipe's
  // 128 MiB): one dispatch per slice of rows; each copies the ids that fall in its slice.
  const uint64_t slice = slice_rows(info, info.max_storage_buffer_range, rb);
  const uint64_t t_end = table.offset + t_size;
  for (uint64_t r0 = 0; r0 < t_rows; r0 += slice) {
    const uint64_t n_rows = std::min(slice, t_rows - r0), off = table.offset + r0 * rb;
    const uint64_t bytes = std::min((n_rows * rb + 3) / 4 * 4, t_end - off);  // shaders read whole 32-bit words
    cs.dispatch(k.weights(weight_kind(wt)).get_rows, {BufferRange(*table.buffer, off, bytes), ids, y},
                GetRowsPush{n, rows, uint32_t(r0), uint32_t(n_rows)}, gx, gy);
  }
}

void op_rope(CommandStream& cs, const Kernels& k, BufferRange x, BufferRange factors, bool has_factors, uint32_t T,
             uint32_t n_heads, const RopeParams& p, BufferRange y, uint32_t y_heads) {
  SNAPVK_ASSERT(p.n_rot % 2 == 0 && p.n_rot <= p.head_dim, "rope: n_rot must be even and <= head_dim");
  SNAPVK_ASSERT(!y_heads || y.buffer, "rope: y heads without y");
  uint32_t gx, gy;
  items_grid(k, uint64_t(T) * (n_heads + y_heads) * (p.n_rot / 2), gx, gy);
  cs.dispatch(k.rope, {x, factors, y_heads ? y : x},
              RopePush{T, n_heads, p.head_dim, p.n_rot, p.pos0, p.freq_base, p.mode, has_factors ? 1u : 0u,
                       p.freq_scale, y_heads},
              gx, gy);
}

void op_swiglu(CommandStream& cs, const Kernels& k, BufferRange g, BufferRange u, BufferRange y, uint32_t n) {
  uint32_t gx, gy;
  items_grid(k, n, gx, gy);
  cs.dispatch(k.swiglu, {g, u, y}, UnaryPush{n}, gx, gy);
}

void op_geglu(CommandStream& cs, const Kernels& k, BufferRange g, BufferRange u, BufferRange y, uint32_t n) {
  uint32_t gx, gy;
  items_grid(k, n, gx, gy);
  cs.dispatch(k.geglu, {g, u, y}, UnaryPush{n}, gx, gy);
}

void op_softcap(CommandStream& cs, const Kernels& k, BufferRange x, uint64_t n, float cap) {
  SNAPVK_ASSERT(cap > 0, "softcap: cap must be positive");
  SNAPVK_ASSERT(x.buffer && x.offset + n * 4 <= x.buffer->size(), "softcap: range outside its buffer");
  // A batch's logits may be larger than one binding (256 rows of 262144): aligned pieces.
  const uint64_t align = offset_alignment(k.ctx.info());
  const uint64_t piece = std::min<uint64_t>(max_binding_range(k), UINT32_MAX) / align * align / 4;
  for (uint64_t i0 = 0; i0 < n; i0 += piece) {
    const uint32_t m = uint32_t(std::min(piece, n - i0));
    uint32_t gx, gy;
    items_grid(k, m, gx, gy);
    cs.dispatch(k.softcap, {BufferRange(*x.buffer, x.offset + i0 * 4, uint64_t(m) * 4)}, SoftcapPush{m, cap}, gx, gy);
  }
}

void grid_2d(const DeviceInfo& info, uint64_t groups, uint32_t& gx, uint32_t& gy) {
  const uint64_t max_x = info.max_workgroup_count[0];
  if (groups <= max_x) {
    gx = uint32_t(groups);
    gy = 1;
    return;
  }
  gy = uint32_t((groups + max_x - 1) / max_x);
  gx = uint32_t((groups + gy - 1) / gy);
  SNAPVK_ASSERT(gy <= info.max_workgroup_count[1], "grid too large");
}

namespace {
void binary(CommandStream& cs, const Kernels& k, const Pipeline& p, BufferRange a, BufferRange b, BufferRange c,
            uint32_t n, uint32_t nb) {
  SNAPVK_ASSERT(nb > 0 && n % nb == 0, p.name() + ": n must be a multiple of nb");
  uint32_t gx, gy;
  grid_2d(k.ctx.info(), (uint64_t(n) + k.tuning.elementwise_wg - 1) / k.tuning.elementwise_wg, gx, gy);
  cs.dispatch(p, {a, b, c}, BinaryPush{n, nb}, gx, gy);
}
}  // namespace

void op_add(CommandStream& cs, const Kernels& k, BufferRange a, BufferRange b, BufferRange c, uint32_t n, uint32_t nb) {
  binary(cs, k, k.add, a, b, c, n, nb);
}

void op_mul(CommandStream& cs, const Kernels& k, BufferRange a, BufferRange b, BufferRange c, uint32_t n, uint32_t nb) {
  binary(cs, k, k.mul, a, b, c, n, nb);
}

void op_rms_norm(CommandStream& cs, const Kernels& k, BufferRange x, BufferRange w, BufferRange y, uint32_t rows,
                 uint32_t n, float eps) {
  SNAPVK_ASSERT(n > 0, "rms_norm: empty rows");
  check_loops(k.ctx.info(), rms_norm_loops(k, n), [&] { return "rows of " + std::to_string(n); });
  uint32_t gx, gy;
  grid_2d(k.ctx.info(), rows, gx, gy);
  cs.dispatch(k.rms_norm, {x, w, y}, RmsNormPush{n, rows, eps}, gx, gy);
}

bool matvec_fits(const Kernels& k, GgmlType wt, uint64_t rows, uint32_t K) {
  return rows * row_bytes(wt, K) <= max_binding_range(k);
}

void op_matvec(CommandStream& cs, const Kernels& k, GgmlType wt, BufferRange w, BufferRange x, BufferRange y,
               uint32_t N, uint32_t K, const MatvecFuse& fuse) {
  SNAPVK_ASSERT(N > 0 && K > 0, "matvec: empty matrix");
  SNAPVK_ASSERT(K % traits_of(wt).block_size == 0, "matvec: row length is not a multiple of the block size");
  const DeviceInfo& info = k.ctx.info();
  check_loops(info, matvec_loops(k, wt, K), [&] { return "weight rows of " + std::to_string(K); });
  const WeightKernels& wk = k.weights(weight_kind(wt));
  const bool glu = fuse.glu != Glu::None, fused = fuse.norm || fuse.add || glu;
  SNAPVK_ASSERT(!(fuse.add && (fuse.norm || glu)), "matvec: no pipeline adds to y after a norm or GLU");
  SNAPVK_ASSERT(!glu || fuse.norm, "matvec: a GLU comes with its norm");
  SNAPVK_ASSERT(!glu || k.tuning.matvec_rows % 2 == 0, "matvec: a GLU needs an even number of rows per workgroup");
  const Pipeline& p = fuse.glu == Glu::Silu   ? wk.matvec_norm_swiglu
                      : fuse.glu == Glu::Gelu ? wk.matvec_norm_geglu
                      : fuse.norm             ? wk.matvec_norm
                      : fuse.add              ? wk.matvec_add
                                              : wk.matvec;
  const BufferRange g = fuse.norm ? *fuse.norm : x;  // (unread without NORM_X)
  const uint32_t outs = glu ? k.tuning.matvec_rows / 2 : k.tuning.matvec_rows;  // per workgroup
  auto dispatch = [&](BufferRange wr, BufferRange yr, uint32_t rows) {
    uint32_t gx, gy;
    grid_2d(info, (uint64_t(rows) + outs - 1) / outs, gx, gy);
    cs.dispatch(p, {wr, x, yr, g}, MatvecPush{K, rows, fuse.eps}, gx, gy);
  };
  const uint64_t max_range = max_binding_range(k);
  SNAPVK_ASSERT(w.buffer && w.offset <= w.buffer->size(), "matvec: weight range outside its buffer");
  const uint64_t rb = row_bytes(wt, K), w_size = w.size ? w.size : w.buffer->size() - w.offset;
  SNAPVK_ASSERT(w_size >= (glu ? 2 : 1) * N * rb, "matvec: weight range smaller than its rows");
  SNAPVK_ASSERT(y.buffer && y.offset + uint64_t(N) * 4 <= y.buffer->size(), "matvec: output range outside its buffer");
  if (w_size <= max_range) {  // y for its N values only: the buffer may hold a batch's rows
    dispatch(w, BufferRange(*y.buffer, y.offset, uint64_t(N) * 4), N);
    return;
  }
  SNAPVK_ASSERT(!fused, "matvec: a fused op needs the weights in one binding (matvec_fits)");
  // Weights larger than one binding may be (e.g. a 128256 x 4096 Q6_K LM head, 430 MB, against
  // lavapipe's 128 MiB): one dispatch per slice of rows, each binding its own sub-range of W and
  // y. Slices start at multiples of `step` rows so that both offsets stay aligned.
  const uint64_t slice = slice_rows(info, max_range, rb);
  const uint64_t w_end = w.offset + w_size;
  for (uint64_t r0 = 0; r0 < N; r0 += slice) {
    const uint64_t rows = std::min<uint64_t>(slice, N - r0), off = w.offset + r0 * rb;
    const uint64_t bytes = std::min((rows * rb + 3) / 4 * 4, w_end - off);  // shaders read whole 32-bit words
    dispatch(BufferRange(*w.buffer, off, bytes), BufferRange(*y.buffer, y.offset + r0 * 4, rows * 4), uint32_t(rows));
  }
}

void op_matmul(CommandStream& cs, const Kernels& k, GgmlType wt, BufferRange w, BufferRange x, BufferRange y,
               uint32_t M, uint32_t N, uint32_t K) {
  SNAPVK_ASSERT(M > 0 && N > 0 && K > 0, "matmul: empty matrix");
  SNAPVK_ASSERT(K % traits_of(wt).block_size == 0, "matmul: row length is not a multiple of the block size");
  const DeviceInfo& info = k.ctx.info();
  const bool rows_kernel = k.tuning.matmul_rows && K % 4 == 0;
  check_loops(info, matmul_loops(k, K, rows_kernel), [&] { return "weight rows of " + std::to_string(K); });
  const WeightKernels& wk = k.weights(weight_kind(wt));
  // rows of X per invocation of matmul_rows: the tuning's, or 2 or 4 for a batch of as few
  const uint32_t few = M <= 2 ? 0 : M <= 4 ? 1 : 2;
  const bool fewer = rows_kernel && few < 2 && wk.matmul_rows_few[few];
  const uint32_t tm = fewer ? 2u << few : k.tuning.matmul_rows_tm;
  const Pipeline& p = fewer ? wk.matmul_rows_few[few] : rows_kernel ? wk.matmul_rows : wk.matmul;
  // One dispatch: ms rows of X times ns rows of W into Y's rows of stride N.
  auto dispatch = [&](BufferRange wr, BufferRange xr, BufferRange yr, uint32_t ms, uint32_t ns) {
    uint32_t gx, gy;
    if (rows_kernel) {
      const uint32_t cols = k.tuning.matmul_rows_wg * 4;  // 4 output columns per invocation
      gx = (ns + cols - 1) / cols;
      gy = (ms + tm - 1) / tm;
    } else {
      gx = (ns + k.tuning.matmul_bn - 1) / k.tuning.matmul_bn;
      gy = (ms + k.tuning.matmul_bm - 1) / k.tuning.matmul_bm;
    }
    cs.dispatch(p, {wr, xr, yr}, MatmulPush{ms, ns, K, N}, gx, gy);
  };
  const uint64_t max_range = max_binding_range(k);
  SNAPVK_ASSERT(w.buffer && w.offset <= w.buffer->size(), "matmul: weight range outside its buffer");
  SNAPVK_ASSERT(x.buffer && y.buffer, "matmul: no activation buffer");
  const uint64_t rb = row_bytes(wt, K), w_size = w.size ? w.size : w.buffer->size() - w.offset;
  SNAPVK_ASSERT(w_size >= N * rb, "matmul: weight range smaller than N rows");
  const uint64_t x_row = uint64_t(K) * 4, y_row = uint64_t(N) * 4;
  SNAPVK_ASSERT(x.offset + M * x_row <= x.buffer->size() && y.offset + M * y_row <= y.buffer->size(),
                "matmul: activation range outside its buffer");
  // X and Y are bound for their M rows only: the buffers may hold more (a batch's worth).
  if (w_size <= max_range && M * x_row <= max_range && M * y_row <= max_range) {
    dispatch(w, BufferRange(*x.buffer, x.offset, M * x_row), BufferRange(*y.buffer, y.offset, M * y_row), M, N);
    return;
  }
  // An operand larger than one binding may be (Gemma 3's 262144-token LM head, 178 MB, and its
  // logits for 256 rows, 256 MiB, against lavapipe's 128 MiB): tiles of ms rows of X and Y by ns
  // rows of W, each bound at an aligned offset; a tile writes its columns of Y's whole rows.
  // Tiles of rows start at multiples of m_step rows (aligned X and Y offsets); a tile of W rows
  // leaves room in Y's binding for m_step rows of its columns.
  const uint64_t align = offset_alignment(info);
  const uint64_t m_step = std::lcm(align / std::gcd(align, x_row), align / std::gcd(align, y_row));
  SNAPVK_ASSERT(m_step * x_row <= max_range && (m_step - 1) * y_row < max_range,
                "matmul: activation rows too long to split within maxStorageBufferRange");
  const uint64_t ns = w_size <= max_range && m_step * y_row <= max_range
                          ? N
                          : std::min<uint64_t>(N, slice_rows(info, max_range - (m_step - 1) * y_row, rb));
  uint64_t ms = std::min<uint64_t>(M, std::min(max_range / x_row, (max_range - ns * 4) / y_row + 1));
  if (ms < M) ms = ms / m_step * m_step;
  SNAPVK_ASSERT(ms > 0, "matmul: activation rows too long to split within maxStorageBufferRange");
  const uint64_t w_end = w.offset + w_size;
  for (uint64_t m0 = 0; m0 < M; m0 += ms) {
    const uint64_t rows = std::min<uint64_t>(ms, M - m0);
    const BufferRange xr(*x.buffer, x.offset + m0 * x_row, rows * x_row);
    for (uint64_t n0 = 0; n0 < N; n0 += ns) {
      const uint64_t cols = std::min<uint64_t>(ns, N - n0), off = w.offset + n0 * rb;
      const uint64_t bytes = std::min((cols * rb + 3) / 4 * 4, w_end - off);  // shaders read whole 32-bit words
      dispatch(BufferRange(*w.buffer, off, bytes), xr,
               BufferRange(*y.buffer, y.offset + m0 * y_row + n0 * 4, (rows - 1) * y_row + cols * 4), uint32_t(rows),
               uint32_t(cols));
    }
  }
}

// ---- loops per invocation: one entry per rolled loop of each shader, in its source's order ----

KernelLoops rms_norm_loops(const Kernels& k, uint32_t n) {
  const uint32_t wg = k.tuning.row_wg;
  return KernelLoops("rms_norm")
      .add("sum of squares", strided(n, wg))
      .add("workgroup sum", subgroups_loop(wg, k.tuning.subgroup))
      .add("scaling", strided(n, wg));
}

KernelLoops get_rows_loops(const Kernels& k, uint32_t n) {
  return KernelLoops("get_rows").add("the row", strided(n, k.tuning.row_wg));
}

KernelLoops matvec_loops(const Kernels& k, GgmlType wt, uint32_t K) {
  // Elements per unit (matvec.comp's UNIT) without the 64-bit loads, which double them for f32,
  // f16 and bf16; K that those units do not tile goes element by element.
  const bool plain = wt == GgmlType::F32 || wt == GgmlType::F16 || wt == GgmlType::BF16;
  uint32_t unit = 32;
  if (wt == GgmlType::F32)
    unit = 4;
  else if (plain)
    unit = 8;
  else if (wt == GgmlType::Q6_K || wt == GgmlType::Q2_K || wt == GgmlType::Q3_K)
    unit = 64;
  const uint32_t wg = k.tuning.matvec_wg;
  const bool elements = plain && K % (2 * unit) != 0;
  return KernelLoops("matvec")
      .add("units of a row", elements ? 0 : strided(K / unit, wg))
      .add("elements of a row", elements ? strided(K, wg) : 0)
      .add("workgroup sums", subgroups_loop(wg, k.tuning.subgroup));
}

KernelLoops matmul_loops(const Kernels& k, uint32_t K, bool rows_kernel) {
  if (rows_kernel) return KernelLoops("matmul_rows").add("a row, four at a time", uint64_t(K) / 4 + 1);
  return KernelLoops("matmul").add("tiles along a row", strided(K, k.tuning.matmul_bk));
}

}  // namespace snapvk
