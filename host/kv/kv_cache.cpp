#include "host/kv/kv_cache.h"

#include <algorithm>
#include <string>

#include "host/kv/kv_select.h"
#include "runtime/checked.h"
#include "runtime/vk_check.h"

namespace snapvk {

KvCache::KvCache(const Model& model, KvTypes types, uint32_t n_ctx, uint32_t n_batch)
    : model_(model), types_(types), n_ctx_(n_ctx), n_batch_(n_batch) {
  const ModelConfig& c = model.config();
  if (!kv_type_rotated(types.k)) return;
  // zeros until the first keys set it: a centre is exact whatever it is, and finite it stays
  const std::vector<float> zeros(uint64_t(c.n_head_kv) * c.head_dim, 0.0f);
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    centers_.push_back({Buffer(model.ctx(), zeros.size() * 4, BufferKind::Device, "k_center." + std::to_string(l))});
    centers_.back().c.upload(zeros.data(), zeros.size() * 4);
  }
}

uint32_t KvCache::ring_rows(const ModelConfig& c, uint32_t n_ctx, uint32_t n_batch) {
  return uint32_t(std::min<uint64_t>(n_ctx, uint64_t(c.n_swa) + std::max(n_batch, 1u) - 1));
}

std::vector<uint32_t> KvCache::uniform_table(uint32_t n_kv, uint32_t per_head, uint32_t base) {
  std::vector<uint32_t> table(2 * n_kv);
  for (uint32_t h = 0; h < n_kv; ++h) table[2 * h] = h * per_head, table[2 * h + 1] = base;
  return table;
}

KvLayer& KvCache::allocate_layer(uint32_t l, uint32_t per_head, uint32_t base, bool upload) {
  const uint32_t n_kv = model_.config().n_head_kv;
  KvLayer& out = allocate_heads(l, std::vector<uint32_t>(n_kv, per_head), std::vector<uint32_t>(n_kv, base));
  if (upload) upload_table(out);
  return out;
}

KvLayer& KvCache::allocate_heads(uint32_t l, const std::vector<uint32_t>& cap, const std::vector<uint32_t>& base) {
  const ModelConfig& c = model_.config();
  Context& ctx = model_.ctx();
  const uint32_t n_kv = c.n_head_kv;
  const uint64_t krow = kv_row_bytes(types_.k, c.head_dim), vrow = kv_row_bytes(types_.v, c.head_dim);
  KvLayer& out = layers_[l];
  out.offset.resize(n_kv);
  out.base = base;
  uint64_t rows = 0;
  for (uint32_t h = 0; h < n_kv; ++h) out.offset[h] = uint32_t(rows), rows += cap[h];
  if (rows > UINT32_MAX) throw Error(ErrorKind::InvalidArgument, "KV cache layer of more than 2^32 rows");
  out.n_rows = uint32_t(rows);
  out.k = Buffer(ctx, out.n_rows * krow, BufferKind::Device, "k_cache." + std::to_string(l));
  out.v = Buffer(ctx, out.n_rows * vrow, BufferKind::Device, "v_cache." + std::to_string(l));
  out.heads = Buffer(ctx, 2ull * n_kv * 4, BufferKind::Device, "kv_heads." + std::to_string(l));
  bytes_ += out.n_rows * (krow + vrow);
  out.window = out.ring = 0;
  return out;
}

void KvCache::upload_table(KvLayer& L) {
  std::vector<uint32_t> table(2 * L.offset.size());
  for (size_t h = 0; h < L.offset.size(); ++h) table[2 * h] = L.offset[h], table[2 * h + 1] = L.base[h];
  L.heads.upload(table.data(), table.size() * 4);
}

void KvCache::allocate_ring(uint32_t l) {
  const ModelConfig& c = model_.config();
  const uint32_t ring = ring_rows(c, n_ctx_, n_batch_);
  KvLayer& out = allocate_layer(l, ring, 0, true);
  out.window = c.n_swa, out.ring = ring;
}

void KvCache::allocate_full() {
  const ModelConfig& c = model_.config();
  clear();
  layers_.resize(c.n_layer);
  room_ = n_ctx_;
  for (uint32_t l = 0; l < c.n_layer; ++l)
    if (c.is_swa(l))
      allocate_ring(l);
    else
      allocate_layer(l, n_ctx_, 0, true);
}

void KvCache::clear() {
  layers_.clear();
  for (KCenter& c : centers_) c.set = false;
  room_ = compacted_len_ = 0;
  bytes_ = 0;
  selection_.clear();
}

void KvCache::begin_prompt(uint32_t L, bool keep_selection) {
  const uint32_t n_layer = model_.config().n_layer;
  clear();
  layers_.resize(n_layer);
  room_ = n_ctx_ - L;
  compacted_len_ = L;
  keep_selection_ = keep_selection;
  selection_.assign(keep_selection ? n_layer : 0, {});
  const ModelConfig& c = model_.config();
  for (uint32_t l = 0; l < n_layer; ++l) {
    if (!c.is_swa(l)) continue;
    allocate_ring(l);
    if (!keep_selection) continue;
    // what the ring holds at the end of the prompt: its last `window` positions
    std::vector<uint32_t> last;
    for (uint32_t p = L > c.n_swa ? L - c.n_swa : 0; p < L; ++p) last.push_back(p);
    selection_[l].assign(c.n_head_kv, last);
  }
}

void KvCache::compact_layer(CommandStream& cs, uint32_t l, const PromptLayer& p, const KvPolicyOptions& pol) {
  const ModelConfig& c = model_.config();
  SNAPVK_ASSERT(!c.is_swa(l), "compact_layer: a sliding-window layer is not compacted");
  const uint32_t n_kv = c.n_head_kv, L = p.L;
  const uint32_t C = pol.layer_budgets(L, c.n_layer)[l];
  const bool compress = L > C;
  const uint32_t W = compress ? std::min(pol.window, L) : L;  // kept whole: every position is "window"
  const uint32_t P = L - W;                                   // prefix positions that compete
  const uint32_t count = compress ? C - W : 0;                // selected prefix entries per head (uniform)
  const bool ada = compress && pol.policy == KvPolicy::AdaKV;
  const uint32_t kept = compress ? C : L;
  KvLayer& out = allocate_layer(l, fixed_rows_ ? fixed_rows_ : kept + room_, kept, !ada);

  cs.begin();
  const SelectArgs args{cs, model_, types_.k, p, pol, out, W, P, count, room_};
  LayerSelection s = compress ? select_for(args) : select_all(args);
  // compacted cache = the selected rows, then the window
  op_kv_gather(cs, model_.kernels(), model_.attention(), p.k, p.v, out.k, out.v, s.sel, s.info, out.heads, n_kv,
               types_, s.max_rows, L, P, W);
  cs.submit();

  std::vector<uint32_t> info(2 * n_kv);
  if (s.layout_on_device) {  // per-head budgets were decided on the GPU: the host needs them to size decode
    out.heads.download(info.data(), info.size() * 4);
    for (uint32_t h = 0; h < n_kv; ++h) out.offset[h] = info[2 * h], out.base[h] = info[2 * h + 1];
  }
  if (!keep_selection_) return;
  std::vector<uint32_t> sel(s.total);
  if (compress) s.sel.download(sel.data(), sel.size() * 4);
  s.info.download(info.data(), info.size() * 4);
  auto& layer_sel = selection_[l];
  layer_sel.assign(n_kv, {});
  for (uint32_t h = 0; h < n_kv; ++h) {
    const uint32_t n_sel = out.base[h] - W;
    for (uint32_t i = 0; i < n_sel; ++i) layer_sel[h].push_back(sel[info[2 * h] + i] - info[2 * h + 1]);
    for (uint32_t pos = P; pos < L; ++pos) layer_sel[h].push_back(pos);
  }
}

uint32_t KvCache::max_len(uint32_t appended) const {
  uint32_t m = 0;
  for (const auto& L : layers_)
    for (uint32_t b : L.base) m = std::max(m, b);  // rings have base 0
  return m + appended;
}

uint64_t KvCache::held_bytes(uint32_t n_past) const {
  const uint32_t appended = n_past > compacted_len_ ? n_past - compacted_len_ : 0;  // 0 during a first prefill
  uint64_t rows = 0;
  for (const auto& L : layers_)
    if (L.window)
      rows += uint64_t(L.base.size()) * std::min(n_past, L.window);  // what a query still sees
    else
      for (uint32_t b : L.base) rows += b + appended;
  return rows * types_.row_bytes(model_.config().head_dim);
}

uint64_t KvCache::full_bytes(const ModelConfig& c, KvTypes t, uint64_t tokens) {
  uint32_t n_swa_layers = 0;
  for (uint32_t l = 0; l < c.n_layer; ++l) n_swa_layers += c.is_swa(l);
  const uint64_t per_row = c.n_head_kv * t.row_bytes(c.head_dim);  // a position's K and V rows
  const uint64_t global = checked_mul(per_row * (c.n_layer - n_swa_layers), tokens, "KV cache bytes");
  return global + per_row * n_swa_layers * std::min<uint64_t>(tokens, c.n_swa);
}

KvSize KvCache::size_after_prompt(const ModelConfig& c, KvTypes t, const KvPolicyOptions& pol, uint32_t L,
                                  uint32_t n_ctx, uint32_t n_batch) {
  KvSize s;
  const uint64_t row = t.row_bytes(c.head_dim), n_kv = c.n_head_kv;  // a K row and a V row
  // a sliding-window layer allocates its ring and retains (what attention can still see) its window
  const uint64_t ring = n_kv * uint64_t(ring_rows(c, n_ctx, n_batch)) * row;
  const uint64_t window = n_kv * uint64_t(std::min(n_ctx, c.n_swa)) * row;
  const bool compressed = pol.compresses();
  const uint32_t room = n_ctx > L ? n_ctx - L : 0;
  const std::vector<uint32_t> budgets = compressed ? pol.layer_budgets(L, c.n_layer) : std::vector<uint32_t>{};
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const uint64_t kv =
        compressed ? n_kv * (uint64_t(std::min(budgets[l], L)) + room) * row : n_kv * uint64_t(n_ctx) * row;
    s.retained += c.is_swa(l) ? window : kv;
    s.allocated += (c.is_swa(l) ? ring : kv) + (compressed ? 8 * n_kv : 0);  // and a compacted cache's heads table
    if (kv_type_rotated(t.k)) s.allocated += 4 * n_kv * c.head_dim;          // and a rotated K's centre
  }
  return s;
}

uint64_t KvCache::bytes_after_restore(const ModelConfig& c, KvTypes t, const KvImage& img, uint32_t n_ctx,
                                      uint32_t n_batch) {
  const uint64_t full = size_after_prompt(c, t, KvPolicyOptions{}, 0, n_ctx, n_batch).allocated;
  if (img.compacted_len == 0) return full;
  const uint64_t row = t.row_bytes(c.head_dim), n_kv = c.n_head_kv;  // a K row and a V row
  const uint64_t room = n_ctx > img.compacted_len ? n_ctx - img.compacted_len : 0;
  uint64_t bytes = full;
  for (uint32_t l = 0; l < c.n_layer && l < img.layers.size(); ++l) {
    bytes += 8 * n_kv;  // the heads table
    if (c.is_swa(l)) continue;
    bytes -= n_kv * uint64_t(n_ctx) * row;
    for (uint32_t b : img.layers[l].base) bytes += (uint64_t(b) + room) * row;
  }
  return bytes;
}

uint64_t KvCache::compaction_scratch_bytes(const ModelConfig& c, const KvPolicyOptions& pol, uint32_t L,
                                           uint32_t budget) {
  if (L <= budget) return 0;
  const uint64_t n_kv = c.n_head_kv, n_q = pol.voting_queries(L), W = std::min(pol.window, L);
  const uint64_t P = L - W, count = budget - W;
  // selection and its info table, the query statistics, votes and pooled votes, a floor selection,
  // the scores after word completion, each query head's sums when the votes take several passes
  const uint64_t completed = pol.completes_words() ? n_kv * P : 0;
  const uint64_t sums = n_q > window_votes_pass_queries(c.group()) ? uint64_t(c.n_head) * P : 0;
  return 4 * (n_kv * count + 2 * n_kv + 2ull * c.n_head * n_q + 2 * n_kv * P + n_kv * count + completed + sums);
}

CompressTimes compress_times(const CommandStream& cs) {
  return {cs.category_ms(kKernelScore), cs.category_ms(kKernelPool), cs.category_ms(kKernelSelect),
          cs.category_ms(kKernelGather)};
}

}  // namespace snapvk
