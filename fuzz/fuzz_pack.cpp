// Fuzzes the pack reader (host/pack, docs/packs.md): any input must end in a Pack whose every
// size agrees with its header, or in a snapvk::Error. Each input is tried as it is and again with
// its checksum made right, so the header and payload checks behind the checksum are reached too.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz/fuzz_common.h"
#include "host/pack/pack.h"
#include "runtime/error.h"

using namespace snapvk;
using snapvk::fuzz::fail;

namespace {

// What read_pack promises about a pack it accepts; and writing it again reads back the same.
void check(const Pack& p) {
  if (p.tokens.size() != p.state.n_past || p.tokens.empty()) fail("token count");
  if (!p.logits.empty() && p.logits.size() != p.model.n_vocab) fail("logits size");
  if (p.state.layers.size() != p.model.n_layer) fail("layer count");
  const uint64_t krow = kv_row_bytes(p.kv_types.k, p.model.head_dim), vrow = kv_row_bytes(p.kv_types.v, p.model.head_dim);
  const uint64_t centre = kv_type_rotated(p.kv_types.k) ? uint64_t(p.model.n_head_kv) * p.model.head_dim : 0;
  for (const KvLayerImage& L : p.state.layers) {
    if (L.base.size() != p.model.n_head_kv || L.rows.size() != p.model.n_head_kv) fail("heads table size");
    uint64_t rows = 0;
    for (uint32_t r : L.rows) rows += r;
    if (L.k.size() != rows * krow || L.v.size() != rows * vrow) fail("K/V bytes");
    if (L.k_center.size() != (rows ? centre : 0)) fail("K centre size");
  }
  const std::vector<uint8_t> again = write_pack(p);
  const Pack q = read_pack(again, "fuzz-again");
  if (write_pack(q) != again) fail("write/read round trip");
}

void try_read(const uint8_t* data, size_t size) {
  try {
    check(read_pack(std::span<const uint8_t>(data, size), "fuzz.svkv"));
  } catch (const Error&) {}
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try_read(data, size);
  if (size < kPackPrelude) return 0;
  std::vector<uint8_t> fixed(data, data + size);
  const uint64_t sum = pack_hash(fixed.data() + kPackPrelude, size - kPackPrelude);
  for (int i = 0; i < 8; ++i) fixed[24 + i] = uint8_t(sum >> (8 * i));
  try_read(fixed.data(), fixed.size());
  return 0;
}
