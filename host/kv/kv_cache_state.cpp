// The cache's contents moved to and from host memory (packs, docs/packs.md) and compacted again
// in place (endless chat). KvCache owns the row layout, so these live with it.
#include <algorithm>
#include <string>

#include "host/kv/kv_cache.h"
#include "host/kv/kv_select.h"
#include "runtime/vk_check.h"

namespace snapvk {

namespace {
[[noreturn]] void bad_image(const std::string& what) {
  throw Error(ErrorKind::InvalidArgument, "KV state does not fit this session: " + what);
}
}  // namespace

KvImage KvCache::save(uint32_t n_past) const {
  const ModelConfig& c = model_.config();
  const uint64_t krow = kv_row_bytes(types_.k, c.head_dim), vrow = kv_row_bytes(types_.v, c.head_dim);
  const uint32_t appended = n_past > compacted_len_ ? n_past - compacted_len_ : 0;
  KvImage img;
  img.compacted_len = compacted_len_;
  img.n_past = n_past;
  img.layers.resize(layers_.size());
  for (size_t l = 0; l < layers_.size(); ++l) {
    const KvLayer& L = layers_[l];
    KvLayerImage& out = img.layers[l];
    out.window = L.window;
    out.base.assign(c.n_head_kv, 0);
    out.rows.assign(c.n_head_kv, 0);
    uint64_t total = 0;
    for (uint32_t h = 0; h < c.n_head_kv; ++h) {
      out.base[h] = L.window ? 0 : L.base[h];
      out.rows[h] = L.window ? std::min(n_past, L.window) : L.base[h] + appended;
      total += out.rows[h];
    }
    out.k.resize(total * krow);
    out.v.resize(total * vrow);
    uint64_t at = 0;
    for (uint32_t h = 0; h < c.n_head_kv; ++h) {
      if (!L.window) {  // a global head's rows are contiguous
        L.k.download(out.k.data() + at * krow, uint64_t(out.rows[h]) * krow, uint64_t(L.offset[h]) * krow);
        L.v.download(out.v.data() + at * vrow, uint64_t(out.rows[h]) * vrow, uint64_t(L.offset[h]) * vrow);
        at += out.rows[h];
        continue;
      }
      // a ring holds position p at row p % ring; the image lists the last positions in order
      for (uint32_t i = 0; i < out.rows[h]; ++i, ++at) {
        const uint64_t r = uint64_t(n_past - out.rows[h] + i) % L.ring;
        L.k.download(out.k.data() + at * krow, krow, (L.offset[h] + r) * krow);
        L.v.download(out.v.data() + at * vrow, vrow, (L.offset[h] + r) * vrow);
      }
    }
    if (!centers_.empty() && centers_[l].set) {  // the keys were stored less it
      out.k_center.resize(uint64_t(c.n_head_kv) * c.head_dim);
      centers_[l].c.download(out.k_center.data(), out.k_center.size() * 4);
    }
  }
  return img;
}

void KvCache::check_image(const KvImage& img) const {
  const ModelConfig& c = model_.config();
  const uint64_t krow = kv_row_bytes(types_.k, c.head_dim), vrow = kv_row_bytes(types_.v, c.head_dim);
  if (img.layers.size() != c.n_layer)
    bad_image(std::to_string(img.layers.size()) + " layers, the model has " + std::to_string(c.n_layer));
  if (img.n_past > n_ctx_ && !fixed_rows_)
    bad_image(std::to_string(img.n_past) + " positions, the context holds " + std::to_string(n_ctx_));
  if (img.compacted_len > img.n_past) bad_image("more positions compacted than held");
  const uint32_t appended = img.n_past - img.compacted_len;
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const KvLayerImage& L = img.layers[l];
    const std::string at = "layer " + std::to_string(l) + ": ";
    if (L.window != (c.is_swa(l) ? c.n_swa : 0)) bad_image(at + "sliding window differs from the model's");
    if (L.base.size() != c.n_head_kv || L.rows.size() != c.n_head_kv) bad_image(at + "KV head count differs");
    uint64_t total = 0;
    for (uint32_t h = 0; h < c.n_head_kv; ++h) {
      const bool ok = L.window ? L.base[h] == 0 && L.rows[h] == std::min(img.n_past, L.window)
                               : (img.compacted_len ? L.base[h] <= img.compacted_len : L.base[h] == 0) &&
                                     uint64_t(L.base[h]) + appended == L.rows[h];
      if (!ok) bad_image(at + "head " + std::to_string(h) + "'s row counts are inconsistent");
      if (fixed_rows_ && !L.window && L.rows[h] > fixed_rows_)
        bad_image(at + "more rows than the cache holds per head");
      if (fixed_rows_ && !L.window && L.base[h] != L.base[0])  // recompress_layer compacts uniform heads
        bad_image(at + "an endless session needs the same retained rows in every head (not an Ada-KV cache)");
      total += L.rows[h];
    }
    if (L.k.size() != total * krow || L.v.size() != total * vrow) bad_image(at + "K/V byte count differs");
    // a rotated K's keys were stored less their layer's centre: it comes with them
    const size_t centre = kv_type_rotated(types_.k) && total ? size_t(c.n_head_kv) * c.head_dim : 0;
    if (L.k_center.size() != centre) bad_image(at + "the K centre's size differs");
  }
}

void KvCache::restore(const KvImage& img) {
  check_image(img);
  const ModelConfig& c = model_.config();
  const uint64_t krow = kv_row_bytes(types_.k, c.head_dim), vrow = kv_row_bytes(types_.v, c.head_dim);
  const bool full = img.compacted_len == 0;
  // a full cache keeps the buffers it has (allocated once per session)
  if (!full || empty() || compacted_len_ != 0 || fixed_rows_) {
    clear();
    layers_.resize(c.n_layer);
    room_ = full ? n_ctx_ : n_ctx_ - img.compacted_len;
    compacted_len_ = img.compacted_len;
  }
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const KvLayerImage& I = img.layers[l];
    if (layers_[l].k.size() == 0) {  // not allocated above
      if (c.is_swa(l)) {
        allocate_ring(l);
      } else if (full) {
        allocate_layer(l, n_ctx_, 0, true);
      } else {
        std::vector<uint32_t> cap(c.n_head_kv);
        for (uint32_t h = 0; h < c.n_head_kv; ++h) cap[h] = fixed_rows_ ? fixed_rows_ : I.base[h] + room_;
        upload_table(allocate_heads(l, cap, I.base));
      }
    }
    KvLayer& L = layers_[l];
    uint64_t at = 0;
    for (uint32_t h = 0; h < c.n_head_kv; ++h) {
      if (L.window) {
        for (uint32_t i = 0; i < I.rows[h]; ++i, ++at) {
          const uint64_t r = uint64_t(img.n_past - I.rows[h] + i) % L.ring;
          L.k.upload(I.k.data() + at * krow, krow, (L.offset[h] + r) * krow);
          L.v.upload(I.v.data() + at * vrow, vrow, (L.offset[h] + r) * vrow);
        }
        continue;
      }
      L.k.upload(I.k.data() + at * krow, uint64_t(I.rows[h]) * krow, uint64_t(L.offset[h]) * krow);
      L.v.upload(I.v.data() + at * vrow, uint64_t(I.rows[h]) * vrow, uint64_t(L.offset[h]) * vrow);
      at += I.rows[h];
    }
    if (!centers_.empty()) {
      centers_[l].set = !I.k_center.empty();
      if (centers_[l].set) centers_[l].c.upload(I.k_center.data(), I.k_center.size() * 4);
    }
  }
}

void KvCache::drop_prompt_tail(uint32_t n) {
  SNAPVK_ASSERT(compacted_len_ > n, "drop_prompt_tail: more rows than the prompt");
  for (KvLayer& L : layers_) {
    if (L.window) continue;  // a ring's rows past the position are never read
    for (uint32_t& b : L.base) {
      SNAPVK_ASSERT(b >= n, "drop_prompt_tail: a head holds fewer rows than dropped");
      b -= n;
    }
    upload_table(L);
  }
  compacted_len_ -= n;
  room_ += n;
}

void KvCache::recompress_layer(CommandStream& cs, uint32_t l, uint32_t appended, const Buffer& q_win, uint32_t n_q,
                               const KvPolicyOptions& pol, const Buffer& scratch_k, const Buffer& scratch_v,
                               Buffer& scratch_heads) {
  const ModelConfig& c = model_.config();
  KvLayer& out = layers_.at(l);
  SNAPVK_ASSERT(!out.window, "recompress_layer: a sliding-window layer is not compacted");
  const uint32_t n_kv = c.n_head_kv, N = out.base[0] + appended;  // rows per head, all compacted again
  for (uint32_t b : out.base) SNAPVK_ASSERT(b == out.base[0], "recompress_layer: heads of uneven budgets");
  const uint32_t C = pol.layer_budgets(N, c.n_layer)[l];
  if (N <= C) {  // within the budget: every row stays
    for (uint32_t& b : out.base) b = N;
    upload_table(out);
    return;
  }
  const uint32_t W = std::min({pol.window, n_q, N}), P = N - W, count = C - W;
  const uint64_t krow = kv_row_bytes(types_.k, c.head_dim), vrow = kv_row_bytes(types_.v, c.head_dim);
  const std::vector<uint32_t> table = uniform_table(n_kv, N, 0);
  scratch_heads.upload(table.data(), table.size() * 4);
  cs.begin();
  // the rows move to scratch first: the gather cannot read and write the same rows
  for (uint32_t h = 0; h < n_kv; ++h) {
    cs.copy(out.k, out.offset[h] * krow, scratch_k, uint64_t(h) * N * krow, N * krow);
    cs.copy(out.v, out.offset[h] * vrow, scratch_v, uint64_t(h) * N * vrow, N * vrow);
  }
  cs.barrier();
  const PromptLayer p{scratch_k, scratch_v, scratch_heads, q_win, N, W};
  for (uint32_t& b : out.base) b = C;
  upload_table(out);  // offsets unchanged: the gather writes each head's rows from its start
  const SelectArgs args{cs, model_, types_.k, p, pol, out, W, P, count, 0};
  LayerSelection s = select_for(args);
  op_kv_gather(cs, model_.kernels(), model_.attention(), scratch_k, scratch_v, out.k, out.v, s.sel, s.info, out.heads,
               n_kv, types_, s.max_rows, N, P, W);
  cs.submit();
}

void KvCache::end_recompress(uint32_t n_past) {
  room_ = fixed_rows_ ? fixed_rows_ - max_len(0) : room_;
  compacted_len_ = n_past;
}

}  // namespace snapvk
