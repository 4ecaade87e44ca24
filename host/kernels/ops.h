#pragma once
// The model's kernels: pipelines created once per device, and one small function per op
// that checks shapes and records a dispatch. Push-constant structs mirror the GLSL blocks.
#include <cstdint>
#include <mutex>

#include "host/gguf/ggml_types.h"
#include "host/kernels/loop_bounds.h"
#include "runtime/commands.h"
#include "runtime/context.h"
#include "runtime/pipeline.h"

namespace snapvk {

// Workgroup and tile sizes per device, chosen once; kernels take them as specialization constants.
struct Tuning {
  uint32_t subgroup = 32;
  uint32_t elementwise_wg = 256;
  uint32_t row_wg = 256;  // rms_norm, get_rows: one workgroup per row
  uint32_t matvec_wg = 128;
  uint32_t matvec_rows = 2;   // rows per matvec workgroup
  bool matvec_int64 = false;  // CPU devices: the _i64 matvec variants (64-bit loads) where shaderInt64 exists
  uint64_t max_binding_range =
      0;  // split matvec/matmul operands into bindings of at most this many bytes (0: the device's limit)
  uint32_t matmul_bm = 64, matmul_bn = 64, matmul_bk = 16;
  bool matmul_rows = false;  // CPU devices: matmul_rows (uniform activation loads) instead of tiles
  uint32_t matmul_rows_wg = 16, matmul_rows_tm = 8;
  static Tuning for_device(const DeviceInfo& info);
};

// Kernels indexed by weight type: the <op>_<wtype>_f32 variants.
enum WeightKind : uint32_t {
  kWeightF32 = 0,
  kWeightF16,
  kWeightBF16,
  kWeightQ8_0,
  kWeightQ4_0,
  kWeightQ4_K,
  kWeightQ6_K,
  kWeightQ4_1,
  kWeightQ5_0,
  kWeightQ5_1,
  kWeightQ2_K,
  kWeightQ3_K,
  kWeightQ5_K,
  kWeightIQ4_NL,
  kWeightIQ4_XS,
  kWeightKinds
};
// The variant that runs a weight of this ggml type; throws for types without kernels.
WeightKind weight_kind(GgmlType type);

// The kernels of one weight type: <op>_<wtype>_f32.
struct WeightKernels {
  Pipeline matvec;       // y = W x
  // y = W x with the ops around it fused (MatvecFuse): a layer's decode in fewer dispatches
  Pipeline matvec_norm;                         // y = W rmsnorm(x)
  Pipeline matvec_add;                          // y += W x
  Pipeline matvec_norm_swiglu, matvec_norm_geglu;  // y = act(Wg rmsnorm(x)) * (Wu rmsnorm(x))
  Pipeline matmul;       // Y = X W^T, shared-memory tiles (GPUs)
  Pipeline matmul_rows;  // Y = X W^T, one column per invocation (SIMD CPUs)
  // matmul_rows with 2 and 4 rows of X per invocation: a batch of a few rows (a decode step of a
  // few sequences) would leave most of the tuning's rows idle and still pay their multiplies
  Pipeline matmul_rows_few[2];
  Pipeline get_rows;     // embedding lookup
};

struct Kernels {
  explicit Kernels(Context& ctx);
  Context& ctx;
  Tuning tuning;
  Pipeline add;       // c = a + b (b broadcast)
  Pipeline mul;       // c = a * b (b broadcast)
  Pipeline rms_norm;  // y = x / rms(x) * w, per row
  Pipeline rope;      // rotary embedding, in place
  Pipeline swiglu;    // silu(gate) * up
  Pipeline geglu;     // gelu_tanh(gate) * up
  Pipeline softcap;   // cap * tanh(x / cap), in place

  // A weight type's kernels, created by its first call (once, from any thread): a model uses two
  // or three of the kWeightKinds types, and creating all 60 pipelines was most of the start of a
  // short run (lavapipe translates each one). Model's constructor asks for its types, so that
  // they too are created at load, not during a step.
  WeightKernels& weights(WeightKind w) const;

 private:
  mutable WeightKernels weights_[kWeightKinds];
  mutable std::once_flag weights_made_[kWeightKinds];
};

// ---- push constants (one struct per kernel, <= 128 bytes) ----
struct BinaryPush {
  uint32_t n, nb;
};
struct RmsNormPush {
  uint32_t n, rows;
  float eps;
};
struct MatvecPush {
  uint32_t K, N;  // N: outputs (a GLU's rows of each half)
  float eps;      // the fused rmsnorm's
};
struct MatmulPush {
  uint32_t M, N, K;
  uint32_t ldy;  // Y's row stride in floats: N, or the whole row when this dispatch writes a slice of columns
};
struct GetRowsPush {
  uint32_t n, rows, row0, table_rows;
};  // ids outside [row0, row0 + table_rows) are another slice's
struct RopePush {
  uint32_t T, n_heads, head_dim, n_rot, pos0;
  float freq_base;
  uint32_t mode, has_factors;
  float freq_scale;
  uint32_t y_heads;
};
struct UnaryPush {
  uint32_t n;
};
struct SoftcapPush {
  uint32_t n;
  float cap;
};
static_assert(sizeof(BinaryPush) <= 128 && sizeof(RmsNormPush) <= 128 && sizeof(MatvecPush) <= 128 &&
              sizeof(MatmulPush) <= 128);

// ---- ops: record one dispatch each; buffers hold f32 unless a weight type is named ----
// c[i] = a[i] + b[i % nb], i < n
void op_add(CommandStream& cs, const Kernels& k, BufferRange a, BufferRange b, BufferRange c, uint32_t n, uint32_t nb);
// c[i] = a[i] * b[i % nb], i < n
void op_mul(CommandStream& cs, const Kernels& k, BufferRange a, BufferRange b, BufferRange c, uint32_t n, uint32_t nb);
// x, y: [rows, n]; w: [n]
void op_rms_norm(CommandStream& cs, const Kernels& k, BufferRange x, BufferRange w, BufferRange y, uint32_t rows,
                 uint32_t n, float eps);
// The ops a matvec does around y = W x, in the same dispatch (shaders/matvec.comp).
enum class Glu : uint32_t { None = 0, Silu = 1, Gelu = 2 };
struct MatvecFuse {
  const BufferRange* norm = nullptr;  // x is rmsnorm(x) * norm[0..K) first (eps below)
  float eps = 0;
  bool add = false;     // y += W x: the residual add after a projection
  Glu glu = Glu::None;  // W is [2N, K], gate rows then up rows: y = act(W_gate x) * (W_up x)
};
// w: [N, K] of type wt (a GLU: [2N, K]); x: [K]; y: [N]. A fused op needs W within one binding
// (matvec_fits).
void op_matvec(CommandStream& cs, const Kernels& k, GgmlType wt, BufferRange w, BufferRange x, BufferRange y,
               uint32_t N, uint32_t K, const MatvecFuse& fuse = {});
// Whether W of `rows` rows of K fits one binding, as a fused matvec needs.
bool matvec_fits(const Kernels& k, GgmlType wt, uint64_t rows, uint32_t K);
// w: [N, K] of type wt; x: [M, K]; y: [M, N]
void op_matmul(CommandStream& cs, const Kernels& k, GgmlType wt, BufferRange w, BufferRange x, BufferRange y,
               uint32_t M, uint32_t N, uint32_t K);

// table: [rows_in_table, n] of type wt; ids: [rows] int32; y: [rows, n]
void op_get_rows(CommandStream& cs, const Kernels& k, GgmlType wt, BufferRange table, BufferRange ids, BufferRange y,
                 uint32_t rows, uint32_t n);
struct RopeParams {
  uint32_t head_dim, n_rot, pos0;
  float freq_base;
  uint32_t mode;            // 0 NORM (adjacent pairs), 2 NEOX (halves)
  float freq_scale = 1.0f;  // linear scaling: positions times freq_scale
};
// x: [T, n_heads, head_dim], in place, and y: [T, y_heads, head_dim] in the same dispatch when
// y_heads > 0 (a layer's q and k); factors: [n_rot/2] or any buffer when has_factors is false
void op_rope(CommandStream& cs, const Kernels& k, BufferRange x, BufferRange factors, bool has_factors, uint32_t T,
             uint32_t n_heads, const RopeParams& p, BufferRange y = {}, uint32_t y_heads = 0);
// y = silu(g) * u, n elements
void op_swiglu(CommandStream& cs, const Kernels& k, BufferRange g, BufferRange u, BufferRange y, uint32_t n);
// y = gelu(g) * u with GELU's tanh approximation (ggml_gelu), n elements
void op_geglu(CommandStream& cs, const Kernels& k, BufferRange g, BufferRange u, BufferRange y, uint32_t n);
// x = cap * tanh(x / cap), n elements in place (cap > 0)
void op_softcap(CommandStream& cs, const Kernels& k, BufferRange x, uint64_t n, float cap);

// Loops per invocation (host/kernels/loop_bounds.h) of the kernels above with loops; add, mul,
// rope, swiglu, geglu and softcap have none. n: a row's length; K: the weights' row length.
KernelLoops rms_norm_loops(const Kernels& k, uint32_t n);
KernelLoops get_rows_loops(const Kernels& k, uint32_t n);
KernelLoops matvec_loops(const Kernels& k, GgmlType wt, uint32_t K);
KernelLoops matmul_loops(const Kernels& k, uint32_t K, bool rows_kernel);  // matmul_rows or the tiled matmul

// Grid for `groups` workgroups laid out in 2-D when they exceed the x limit (kernels use flat_workgroup()).
void grid_2d(const DeviceInfo& info, uint64_t groups, uint32_t& gx, uint32_t& gy);
// Grid for one invocation per item at the elementwise workgroup size.
void items_grid(const Kernels& k, uint64_t items, uint32_t& gx, uint32_t& gy);

}  // namespace snapvk
