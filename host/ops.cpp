#include "host/ops.h"

#include <algorithm>
#include <string>

#include "runtime/vk_check.h"
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
    t.matvec_wg = fit(32);
    t.matvec_rows = 4;
  } else {
    t.elementwise_wg = fit(256);
    t.row_wg = fit(256);
    t.matvec_wg = fit(128);
    t.matvec_rows = 2;
  }
  t.elementwise_wg = fit(t.elementwise_wg);
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
    default: throw Error(std::string("no GPU kernel for weight type ") + type_name(type));
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
  softmax = make(c, "softmax", spv::softmax(), 2, sizeof(SoftmaxPush), {t.row_wg});
  const uint32_t mm_wg = (t.matmul_bm / 4) * (t.matmul_bn / 4);
  const std::vector<uint32_t> mv_spec = {t.matvec_wg, t.matvec_rows};
  const std::vector<uint32_t> mm_spec = {mm_wg, t.matmul_bm, t.matmul_bn, t.matmul_bk};
  struct Variant {
    WeightKind kind;
    const char *mv_name, *mm_name;
    std::span<const uint32_t> mv, mm;
  };
  const Variant variants[] = {
      {kWeightF32, "matvec_f32_f32", "matmul_f32_f32", spv::matvec_f32_f32(), spv::matmul_f32_f32()},
      {kWeightF16, "matvec_f16_f32", "matmul_f16_f32", spv::matvec_f16_f32(), spv::matmul_f16_f32()},
      {kWeightBF16, "matvec_bf16_f32", "matmul_bf16_f32", spv::matvec_bf16_f32(), spv::matmul_bf16_f32()},
      {kWeightQ8_0, "matvec_q8_0_f32", "matmul_q8_0_f32", spv::matvec_q8_0_f32(), spv::matmul_q8_0_f32()},
      {kWeightQ4_0, "matvec_q4_0_f32", "matmul_q4_0_f32", spv::matvec_q4_0_f32(), spv::matmul_q4_0_f32()},
      {kWeightQ4_K, "matvec_q4_k_f32", "matmul_q4_k_f32", spv::matvec_q4_k_f32(), spv::matmul_q4_k_f32()},
      {kWeightQ6_K, "matvec_q6_k_f32", "matmul_q6_k_f32", spv::matvec_q6_k_f32(), spv::matmul_q6_k_f32()},
  };
  for (const Variant& v : variants) {
    matvec[v.kind] = make(c, v.mv_name, v.mv, 3, sizeof(MatvecPush), mv_spec);
    matmul[v.kind] = make(c, v.mm_name, v.mm, 3, sizeof(MatmulPush), mm_spec);
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
  uint32_t gx, gy;
  grid_2d(k.ctx.info(), rows, gx, gy);
  cs.dispatch(k.rms_norm, {x, w, y}, RmsNormPush{n, rows, eps}, gx, gy);
}

void op_softmax(CommandStream& cs, const Kernels& k, BufferRange x, BufferRange y, uint32_t rows, uint32_t n,
                float scale) {
  SNAPVK_ASSERT(n > 0, "softmax: empty rows");
  uint32_t gx, gy;
  grid_2d(k.ctx.info(), rows, gx, gy);
  cs.dispatch(k.softmax, {x, y}, SoftmaxPush{n, rows, scale}, gx, gy);
}

void op_matvec(CommandStream& cs, const Kernels& k, GgmlType wt, BufferRange w, BufferRange x, BufferRange y,
               uint32_t N, uint32_t K) {
  SNAPVK_ASSERT(N > 0 && K > 0, "matvec: empty matrix");
  uint32_t gx, gy;
  grid_2d(k.ctx.info(), (uint64_t(N) + k.tuning.matvec_rows - 1) / k.tuning.matvec_rows, gx, gy);
  cs.dispatch(k.matvec[weight_kind(wt)], {w, x, y}, MatvecPush{K, N}, gx, gy);
}

void op_matmul(CommandStream& cs, const Kernels& k, GgmlType wt, BufferRange w, BufferRange x, BufferRange y,
               uint32_t M, uint32_t N, uint32_t K) {
  SNAPVK_ASSERT(M > 0 && N > 0 && K > 0, "matmul: empty matrix");
  const uint32_t gx = (N + k.tuning.matmul_bn - 1) / k.tuning.matmul_bn;
  const uint32_t gy = (M + k.tuning.matmul_bm - 1) / k.tuning.matmul_bm;
  cs.dispatch(k.matmul[weight_kind(wt)], {w, x, y}, MatmulPush{M, N, K}, gx, gy);
}

}  // namespace snapvk
