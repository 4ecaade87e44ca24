#pragma once
// Knowledge packs: a session's state after a document (its KV cache, full or compressed, with
// positions, token ids and policy) written once and loaded per question, so the document is
// never prefilled again. The byte layout is docs/packs.md. Reading checks everything (format,
// version, checksum, every size against the header) before a byte reaches a session.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "host/kv/kv_cache.h"
#include "host/kv/kv_policy.h"
#include "host/model/model.h"
#include "host/session/session.h"

namespace snapvk {

inline constexpr uint32_t kPackVersion = 1;
inline constexpr char kPackMagic[8] = {'S', 'N', 'A', 'P', 'V', 'K', 'P', 'K'};
inline constexpr size_t kPackPrelude = 32;  // magic, version, header and payload sizes, checksum

// Which model a pack was made with: a pack loads only into the same architecture, shapes and
// weights.
struct PackModelId {
  std::string arch;  // general.architecture
  uint32_t n_layer = 0, n_embd = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_ff = 0, n_vocab = 0;
  uint64_t tensor_hash = 0;  // pack_hash over every tensor's name, type, shape and data, in file order
  bool operator==(const PackModelId&) const = default;
  std::string describe() const;  // "llama, 30 layers, 9 heads (3 KV) of 64, vocab 49152, tensors 0x..."
};
PackModelId pack_model_id(const Model& model);

// The file name ending of a pack (what docs/packs.md and `snapvk serve --packs DIR` expect).
inline constexpr const char* kPackExtension = ".svkv";

struct Pack {
  PackModelId model;
  KvTypes kv_types;  // of K and V (f16 both by default)
  KvPolicyOptions policy;
  std::vector<int32_t> tokens;  // [n] the document's token ids, BOS included (what the cache holds)
  std::vector<int32_t> query;   // [m] question-aware: the expected question that voted (not in the cache)
  KvImage state;                // the cache: n_past = tokens.size()
  std::vector<float> logits;    // [n_vocab] after the last token; empty for a question-aware pack
};

// 64-bit FNV-1a over little-endian 64-bit words (the tail zero-padded), then the length mixed in.
uint64_t pack_hash(const uint8_t* data, size_t size, uint64_t h = 0xcbf29ce484222325ull);

std::vector<uint8_t> write_pack(const Pack& p);
// Parses and checks a pack image: throws snapvk::Error (InvalidArgument, "pack 'name': ...")
// for anything short, corrupted, of another version or inconsistent. `name` is for messages.
Pack read_pack(std::span<const uint8_t> bytes, const std::string& name);
// Throws unless the pack was made with this model.
void check_pack_model(const Pack& p, const Model& model, const std::string& name);

// The pack of a session holding `tokens` (all it holds: n_past == tokens.size()); `query`:
// the question that voted in a question-aware pack (the logits are then left out).
Pack pack_of(const Session& session, std::vector<int32_t> tokens, std::vector<int32_t> query = {});
// Prefills `doc` in a new session of `so` (compressed by its policy) and returns its pack. With
// a `query`, the question-aware pack: doc + query are prefilled with the query as the
// observation window (W = its length), and the query's rows are dropped after the selection.
// prefill_ms (if given) gets the prefill's wall time.
Pack make_pack(const Model& model, SessionOptions so, std::span<const int32_t> doc, std::span<const int32_t> query,
               double* prefill_ms = nullptr);
// Loads the pack's state into `session` (same model and KV type, a context that holds it),
// replacing what it held. Checked before the session changes.
void load_pack(Session& session, const Pack& p, const std::string& name);
// Session options to load `p` into: its KV type and policy over `base`'s other options.
SessionOptions pack_session_options(const Pack& p, SessionOptions base);

std::vector<uint8_t> read_pack_file(const std::string& path);
void write_pack_file(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace snapvk
