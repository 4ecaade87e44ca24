#pragma once
// The model's kernels: pipelines created once per device, and one small function per op
// that checks shapes and records a dispatch. Push-constant structs mirror the GLSL blocks.
#include <cstdint>

#include "host/ggml_types.h"
#include "runtime/commands.h"
#include "runtime/context.h"
#include "runtime/pipeline.h"

namespace snapvk {

// Workgroup and tile sizes per device, chosen once; kernels take them as specialization constants.
struct Tuning {
  uint32_t subgroup = 32;
  uint32_t elementwise_wg = 256;
  uint32_t row_wg = 256;        // rms_norm, softmax: one workgroup per row
  uint32_t matvec_wg = 128;
  uint32_t matvec_rows = 2;     // rows per matvec workgroup
  uint32_t matmul_bm = 64, matmul_bn = 64, matmul_bk = 16;
  static Tuning for_device(const DeviceInfo& info);
};

// Kernels indexed by weight type: the <op>_<wtype>_f32 variants.
enum WeightKind : uint32_t { kWeightF32 = 0, kWeightF16, kWeightBF16, kWeightQ8_0, kWeightQ4_0, kWeightQ4_K, kWeightQ6_K, kWeightKinds };
// The variant that runs a weight of this ggml type; throws for types without kernels.
WeightKind weight_kind(GgmlType type);

// KV-cache storage types: the kv_store/attn_* variants.
enum class KvType : uint32_t { F32 = 0, F16 = 1 };
constexpr uint32_t kKvTypes = 2;
uint32_t kv_type_bytes_x2(KvType t);  // bytes per 2 elements
const char* kv_type_name(KvType t);

struct Kernels {
  explicit Kernels(Context& ctx);
  Context& ctx;
  Tuning tuning;
  Pipeline add;                          // c = a + b (b broadcast)
  Pipeline mul;                          // c = a * b (b broadcast)
  Pipeline rms_norm;                     // y = x / rms(x) * w, per row
  Pipeline softmax;                      // y = softmax(scale * x), per row
  Pipeline matvec[kWeightKinds];         // y = W x
  Pipeline matmul[kWeightKinds];         // Y = X W^T
  Pipeline get_rows[kWeightKinds];       // embedding lookup
  Pipeline rope;                         // rotary embedding, in place
  Pipeline swiglu;                       // silu(gate) * up
};

// Attention kernels, specialised for one model's head_dim and GQA group: built once at load.
struct AttentionKernels {
  AttentionKernels() = default;
  AttentionKernels(Context& ctx, const Tuning& t, uint32_t head_dim, uint32_t group);
  uint32_t head_dim = 0, group = 0;
  uint32_t prefill_br = 16, prefill_bc = 16;  // query rows / keys per tile
  uint32_t decode_chunk = 256;                // cache slots per decode workgroup
  Pipeline kv_store[kKvTypes];           // K/V rows into the cache
  Pipeline prefill[kKvTypes];            // causal tiled attention over a chunk of queries
  Pipeline decode[kKvTypes];             // split attention partials for one query
  Pipeline combine;                      // merge the splits
};

// ---- push constants (one struct per kernel, <= 128 bytes) ----
struct BinaryPush { uint32_t n, nb; };
struct RmsNormPush { uint32_t n, rows; float eps; };
struct SoftmaxPush { uint32_t n, rows; float scale; };
struct MatvecPush { uint32_t K, N; };
struct MatmulPush { uint32_t M, N, K; };
struct RowsPush { uint32_t n, rows; };
struct RopePush { uint32_t T, n_heads, head_dim, n_rot, pos0; float freq_base; uint32_t mode, has_factors; };
struct UnaryPush { uint32_t n; };
struct KvStorePush { uint32_t T, n_kv, head_dim, cap, slot0; };
struct AttnPrefillPush { uint32_t T, n_head, n_kv, cap, pos0; float scale; };
struct AttnDecodePush { uint32_t n_kv, cap, n_appended, n_split; float scale; };
struct AttnCombinePush { uint32_t n_split; };
static_assert(sizeof(BinaryPush) <= 128 && sizeof(RmsNormPush) <= 128 && sizeof(SoftmaxPush) <= 128 &&
              sizeof(MatvecPush) <= 128 && sizeof(MatmulPush) <= 128);

// ---- ops: record one dispatch each; buffers hold f32 unless a weight type is named ----
// c[i] = a[i] + b[i % nb], i < n
void op_add(CommandStream& cs, const Kernels& k, BufferRange a, BufferRange b, BufferRange c, uint32_t n, uint32_t nb);
// c[i] = a[i] * b[i % nb], i < n
void op_mul(CommandStream& cs, const Kernels& k, BufferRange a, BufferRange b, BufferRange c, uint32_t n, uint32_t nb);
// x, y: [rows, n]; w: [n]
void op_rms_norm(CommandStream& cs, const Kernels& k, BufferRange x, BufferRange w, BufferRange y, uint32_t rows,
                 uint32_t n, float eps);
// x, y: [rows, n]
void op_softmax(CommandStream& cs, const Kernels& k, BufferRange x, BufferRange y, uint32_t rows, uint32_t n,
                float scale);
// w: [N, K] of type wt; x: [K]; y: [N]
void op_matvec(CommandStream& cs, const Kernels& k, GgmlType wt, BufferRange w, BufferRange x, BufferRange y,
               uint32_t N, uint32_t K);
// w: [N, K] of type wt; x: [M, K]; y: [M, N]
void op_matmul(CommandStream& cs, const Kernels& k, GgmlType wt, BufferRange w, BufferRange x, BufferRange y,
               uint32_t M, uint32_t N, uint32_t K);

// table: [rows_in_table, n] of type wt; ids: [rows] int32; y: [rows, n]
void op_get_rows(CommandStream& cs, const Kernels& k, GgmlType wt, BufferRange table, BufferRange ids, BufferRange y,
                 uint32_t rows, uint32_t n);
struct RopeParams {
  uint32_t head_dim, n_rot, pos0;
  float freq_base;
  uint32_t mode;  // 0 NORM (adjacent pairs), 2 NEOX (halves)
};
// x: [T, n_heads, head_dim], in place; factors: [n_rot/2] or any buffer when has_factors is false
void op_rope(CommandStream& cs, const Kernels& k, BufferRange x, BufferRange factors, bool has_factors, uint32_t T,
             uint32_t n_heads, const RopeParams& p);
// y = silu(g) * u, n elements
void op_swiglu(CommandStream& cs, const Kernels& k, BufferRange g, BufferRange u, BufferRange y, uint32_t n);
// src: [T, n_kv, head_dim] f32 -> cache [n_kv][cap][head_dim] at slot base[h] + slot0 + t
void op_kv_store(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvType kt, BufferRange src,
                 BufferRange cache, BufferRange base, uint32_t T, uint32_t n_kv, uint32_t cap, uint32_t slot0);
// q: [T, n_head, hd] at positions pos0.., K/V caches [n_kv][cap][hd] holding slots 0..pos0+T-1; o: [T, n_head*hd]
void op_attn_prefill(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvType kt, BufferRange q,
                     BufferRange kc, BufferRange vc, BufferRange o, uint32_t T, uint32_t n_head, uint32_t n_kv,
                     uint32_t cap, uint32_t pos0, float scale);
// One query per head, q: [n_head, hd]; head h of the cache holds base[h] + n_appended slots.
// part: scratch of attn_partial_floats(); records attn_decode, a barrier, and attn_combine.
void op_attn_decode(CommandStream& cs, const Kernels& k, const AttentionKernels& a, KvType kt, BufferRange q,
                    BufferRange kc, BufferRange vc, BufferRange base, BufferRange part, BufferRange o, uint32_t n_head,
                    uint32_t n_kv, uint32_t cap, uint32_t max_len, uint32_t n_appended, float scale);
uint64_t attn_partial_floats(const AttentionKernels& a, uint32_t n_head, uint32_t cap);

// Grid for `groups` workgroups laid out in 2-D when they exceed the x limit (kernels use flat_workgroup()).
void grid_2d(const DeviceInfo& info, uint64_t groups, uint32_t& gx, uint32_t& gy);

}  // namespace snapvk
