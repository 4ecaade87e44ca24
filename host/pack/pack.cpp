#include "host/pack/pack.h"

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "host/session/options.h"
#include "runtime/error.h"

namespace snapvk {

namespace {

using json = nlohmann::ordered_json;

[[noreturn]] void bad_pack(const std::string& name, const std::string& what) {
  throw Error(ErrorKind::InvalidArgument, "pack '" + name + "': " + what);
}

void put_u32(std::vector<uint8_t>& out, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) out[at + i] = uint8_t(v >> (8 * i));
}
void put_u64(std::vector<uint8_t>& out, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) out[at + i] = uint8_t(v >> (8 * i));
}
uint32_t get_u32(const uint8_t* p) { return p[0] | p[1] << 8 | p[2] << 16 | uint32_t(p[3]) << 24; }
uint64_t get_u64(const uint8_t* p) { return get_u32(p) | uint64_t(get_u32(p + 4)) << 32; }

// Policy fields: the options of the table (by key, less its "kv_"), then the policies' internal
// fields; enums by name, the rest as JSON numbers.
template <class E>
requires std::is_enum_v<E> json field_json(E v) { return name_in(names(v), v); }
json field_json(uint32_t v) { return v; }
json field_json(float v) { return v; }

template <class E>
requires std::is_enum_v<E>
void field_read(const json& j, E& v) {
  const auto p = parse_in(names(v), j.get<std::string>());
  if (!p) throw std::invalid_argument("unknown name");
  v = *p;
}
void field_read(const json& j, uint32_t& v) { v = j.get<uint32_t>(); }
void field_read(const json& j, float& v) { v = j.get<float>(); }

// Calls f(header field, policy field) for every field a pack keeps.
template <class Kv, class F>
void visit_pack_fields(Kv& o, F&& f) {
  visit_kv_options(o, [&](const OptionInfo& info, auto& v) { f(std::string_view(info.key).substr(3), v); });
  KvPolicyOptions::visit_internal_fields(o, f);
}

json policy_json(const KvPolicyOptions& o) {
  json j = json::object();
  visit_pack_fields(o, [&](std::string_view name, const auto& v) { j[std::string(name)] = field_json(v); });
  return j;
}

KvPolicyOptions policy_from_json(json j, const std::string& name) {
  // Packs before the option table kept pooling as a boolean.
  if (auto it = j.find("avg_pool"); it != j.end() && it->is_boolean() && !j.contains("pool"))
    j["pool"] = it->get<bool>() ? "avg" : "max", j.erase("avg_pool");
  KvPolicyOptions o;
  size_t known = 0;
  visit_pack_fields(o, [&](std::string_view key_view, auto& v) {
    const std::string key(key_view);
    if (!j.contains(key)) return;  // a field newer than the pack: its default
    ++known;
    try {
      field_read(j.at(key), v);
    } catch (const std::exception&) {
      bad_pack(name, "bad KV policy field '" + key + "'");
    }
  });
  if (known != j.size()) bad_pack(name, "KV policy fields this snapvk does not know (a newer pack?)");
  return o;
}

json model_json(const PackModelId& m) {
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(m.tensor_hash));
  return json{{"arch", m.arch},     {"n_layer", m.n_layer},     {"n_embd", m.n_embd},
              {"n_head", m.n_head}, {"n_head_kv", m.n_head_kv}, {"head_dim", m.head_dim},
              {"n_ff", m.n_ff},     {"n_vocab", m.n_vocab},     {"tensor_hash", hash}};
}

PackModelId model_from_json(const json& j) {
  PackModelId m;
  m.arch = j.at("arch").get<std::string>();
  m.n_layer = j.at("n_layer"), m.n_embd = j.at("n_embd"), m.n_head = j.at("n_head");
  m.n_head_kv = j.at("n_head_kv"), m.head_dim = j.at("head_dim"), m.n_ff = j.at("n_ff"), m.n_vocab = j.at("n_vocab");
  const std::string hash = j.at("tensor_hash").get<std::string>();
  if (hash.size() != 16 || hash.find_first_not_of("0123456789abcdef") != std::string::npos)
    throw std::invalid_argument("tensor_hash");
  m.tensor_hash = std::stoull(hash, nullptr, 16);
  return m;
}

json header_json(const Pack& p) {
  json j;
  j["model"] = model_json(p.model);
  // the K and V types (kv_type, one name or "k/v", is what readers before separate types read)
  j["kv_type"] = kv_types_name(p.kv_types);
  j["kv_type_k"] = kv_type_name(p.kv_types.k), j["kv_type_v"] = kv_type_name(p.kv_types.v);
  j["policy"] = policy_json(p.policy);
  j["question_aware"] = !p.query.empty();
  j["n_tokens"] = p.tokens.size(), j["n_query"] = p.query.size(), j["n_logits"] = p.logits.size();
  j["n_past"] = p.state.n_past, j["prompt_len"] = p.state.compacted_len;
  json& layers = j["layers"] = json::array();
  for (const KvLayerImage& L : p.state.layers)
    layers.push_back({{"window", L.window}, {"base", L.base}, {"rows", L.rows}});
  return j;
}

template <class T>
void append(std::vector<uint8_t>& out, const std::vector<T>& v) {
  const auto* b = reinterpret_cast<const uint8_t*>(v.data());
  out.insert(out.end(), b, b + v.size() * sizeof(T));
}

// Reads n items of T from the payload cursor (sizes were checked against the payload first).
template <class T>
void take(const uint8_t*& at, std::vector<T>& v, size_t n) {
  v.resize(n);
  if (n) std::memcpy(v.data(), at, n * sizeof(T));  // an empty vector's data() may be null
  at += n * sizeof(T);
}

}  // namespace

uint64_t pack_hash(const uint8_t* data, size_t size, uint64_t h) {
  constexpr uint64_t kPrime = 0x100000001b3ull;
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t w;
    std::memcpy(&w, data + i, 8);  // little-endian hosts only (as GGUF)
    h = (h ^ w) * kPrime;
  }
  uint64_t tail = 0;
  for (size_t k = 0; i + k < size; ++k) tail |= uint64_t(data[i + k]) << (8 * k);
  h = (h ^ tail) * kPrime;
  return (h ^ uint64_t(size)) * kPrime;
}

std::string PackModelId::describe() const {
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(tensor_hash));
  return arch + ", " + std::to_string(n_layer) + " layers, " + std::to_string(n_head) + " heads (" +
         std::to_string(n_head_kv) + " KV) of " + std::to_string(head_dim) + ", vocab " + std::to_string(n_vocab) +
         ", tensors " + hash;
}

PackModelId pack_model_id(const Model& model) {
  const ModelConfig& c = model.config();
  PackModelId m{c.arch_name, c.n_layer, c.n_embd, c.n_head, c.n_head_kv, c.head_dim, c.n_ff, c.n_vocab, 0};
  uint64_t h = 0xcbf29ce484222325ull;
  for (const GgufTensor& t : model.gguf().tensors()) {
    h = pack_hash(reinterpret_cast<const uint8_t*>(t.name.data()), t.name.size(), h);
    const uint64_t shape[5] = {uint64_t(t.type), t.ne[0], t.ne[1], t.ne[2], t.ne[3]};
    h = pack_hash(reinterpret_cast<const uint8_t*>(shape), sizeof shape, h);
    h = pack_hash(t.data, t.nbytes, h);
  }
  m.tensor_hash = h;
  return m;
}

std::vector<uint8_t> write_pack(const Pack& p) {
  const std::string header = header_json(p).dump();
  std::vector<uint8_t> out(kPackPrelude);
  out.insert(out.end(), header.begin(), header.end());
  append(out, p.tokens);
  append(out, p.query);
  append(out, p.logits);
  for (const KvLayerImage& L : p.state.layers) append(out, L.k), append(out, L.v), append(out, L.k_center);
  std::memcpy(out.data(), kPackMagic, 8);
  put_u32(out, 8, kPackVersion);
  put_u32(out, 12, uint32_t(header.size()));
  put_u64(out, 16, out.size() - kPackPrelude - header.size());
  put_u64(out, 24, pack_hash(out.data() + kPackPrelude, out.size() - kPackPrelude));
  return out;
}

namespace {

// Floats of a layer's K centre after its V rows: a rotated K type's (KvCache::KCenter), else none.
uint64_t center_floats(const Pack& p) {
  return kv_type_rotated(p.kv_types.k) ? uint64_t(p.model.n_head_kv) * p.model.head_dim : 0;
}

// The header's structure into p (sizes and counts only; the payload follows). Returns the
// payload bytes it implies.
uint64_t parse_header(const json& j, Pack& p, const std::string& name) {
  p.model = model_from_json(j.at("model"));
  const bool both = j.contains("kv_type_k");  // else a pack of one type for K and V
  for (auto [key, type] : {std::pair{"kv_type_k", &p.kv_types.k}, std::pair{"kv_type_v", &p.kv_types.v}}) {
    const std::string text = j.at(both ? key : "kv_type").get<std::string>();
    const auto t = parse_kv_type(text);
    if (!t) bad_pack(name, "unknown KV type '" + text + "' (" + names_of(names(KvType{})) + ")");
    *type = *t;
  }
  if (!kv_type_unsupported(p.kv_types.k, p.model.head_dim).empty() ||
      !kv_type_unsupported(p.kv_types.v, p.model.head_dim).empty())
    bad_pack(name, "KV type " + kv_types_name(p.kv_types) + " cannot hold the model's head_dim");
  p.policy = policy_from_json(j.at("policy"), name);
  const uint64_t n_tokens = j.at("n_tokens"), n_query = j.at("n_query"), n_logits = j.at("n_logits");
  p.state.n_past = j.at("n_past"), p.state.compacted_len = j.at("prompt_len");
  if (n_tokens != p.state.n_past || n_tokens == 0) bad_pack(name, "token count differs from the positions held");
  if (n_tokens > kMaxContext || n_query > kMaxContext) bad_pack(name, "more tokens than a context holds");
  if (j.at("question_aware").get<bool>() != (n_query > 0)) bad_pack(name, "question flag differs from its tokens");
  if (n_logits != 0 && n_logits != p.model.n_vocab) bad_pack(name, "logits of another vocabulary size");
  if (p.model.head_dim == 0 || p.model.head_dim > 4096 || p.model.n_head_kv > 4096 || p.model.n_layer > 4096)
    bad_pack(name, "implausible model shape");
  const uint64_t row = p.kv_types.row_bytes(p.model.head_dim);  // a K row and a V row
  uint64_t bytes = 4 * (n_tokens + n_query + n_logits);
  const json& layers = j.at("layers");
  if (layers.size() != p.model.n_layer) bad_pack(name, "layer count differs from the model's");
  p.state.layers.resize(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    KvLayerImage& L = p.state.layers[l];
    L.window = layers[l].at("window");
    L.base = layers[l].at("base").get<std::vector<uint32_t>>();
    L.rows = layers[l].at("rows").get<std::vector<uint32_t>>();
    if (L.base.size() != p.model.n_head_kv || L.rows.size() != p.model.n_head_kv)
      bad_pack(name, "heads table of layer " + std::to_string(l) + " differs from the model's KV heads");
    uint64_t rows = 0;
    for (uint32_t r : L.rows) {
      if (r > p.state.n_past) bad_pack(name, "more rows than positions in layer " + std::to_string(l));
      rows += r;
    }
    bytes += rows * row + (rows ? center_floats(p) * 4 : 0);
  }
  return bytes;
}

}  // namespace

Pack read_pack(std::span<const uint8_t> bytes, const std::string& name) {
  const uint8_t* b = bytes.data();
  if (bytes.size() < kPackPrelude || std::memcmp(b, kPackMagic, 8) != 0) {
    if (bytes.size() >= 8 && std::memcmp(b, kPackMagic, 8) == 0) bad_pack(name, "truncated (no header)");
    bad_pack(name, "not a snapvk pack (bad magic)");
  }
  const uint32_t version = get_u32(b + 8), header_len = get_u32(b + 12);
  if (version != kPackVersion)
    bad_pack(name, "format version " + std::to_string(version) + ", this snapvk reads version " +
                       std::to_string(kPackVersion));
  const uint64_t payload_len = get_u64(b + 16), sum = get_u64(b + 24);
  const uint64_t body = bytes.size() - kPackPrelude;
  if (header_len > body || payload_len != body - header_len)
    bad_pack(name, payload_len + header_len > body ? "truncated (" + std::to_string(bytes.size()) + " bytes of " +
                                                         std::to_string(kPackPrelude + header_len + payload_len) + ")"
                                                   : "trailing bytes after the payload");
  if (pack_hash(b + kPackPrelude, body) != sum) bad_pack(name, "checksum mismatch: the file is corrupted");
  Pack p;
  uint64_t expected = 0;
  json j;
  try {
    j = json::parse(b + kPackPrelude, b + kPackPrelude + header_len);
    expected = parse_header(j, p, name);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    bad_pack(name, std::string("bad header: ") + e.what());
  }
  if (expected != payload_len)
    bad_pack(name,
             "payload of " + std::to_string(payload_len) + " bytes, the header describes " + std::to_string(expected));
  const uint8_t* at = b + kPackPrelude + header_len;
  const uint64_t krow = kv_row_bytes(p.kv_types.k, p.model.head_dim), vrow = kv_row_bytes(p.kv_types.v, p.model.head_dim);
  take(at, p.tokens, j.at("n_tokens").get<size_t>());
  take(at, p.query, j.at("n_query").get<size_t>());
  take(at, p.logits, j.at("n_logits").get<size_t>());
  for (KvLayerImage& L : p.state.layers) {
    uint64_t rows = 0;
    for (uint32_t r : L.rows) rows += r;
    take(at, L.k, rows * krow);
    take(at, L.v, rows * vrow);
    take(at, L.k_center, rows ? center_floats(p) : 0);
  }
  return p;
}

void check_pack_model(const Pack& p, const Model& model, const std::string& name) {
  const PackModelId here = pack_model_id(model);
  if (!(here == p.model))
    bad_pack(name, "made with another model (" + p.model.describe() + "; this model: " + here.describe() + ")");
}

Pack pack_of(const Session& session, std::vector<int32_t> tokens, std::vector<int32_t> query) {
  if (tokens.size() != session.n_past() || tokens.empty())
    throw Error(ErrorKind::InvalidArgument, "a pack needs a session holding its tokens (" +
                                                std::to_string(session.n_past()) + " held, " +
                                                std::to_string(tokens.size()) + " token ids)");
  Pack p;
  p.model = pack_model_id(session.model());
  p.kv_types = session.cache().types();
  p.policy = session.options().kv;
  p.tokens = std::move(tokens);
  p.state = session.save_state();
  if (query.empty()) p.logits.assign(session.logits().begin(), session.logits().end());
  p.query = std::move(query);
  return p;
}

Pack make_pack(const Model& model, SessionOptions so, std::span<const int32_t> doc, std::span<const int32_t> query,
               double* prefill_ms) {
  if (!query.empty()) {
    if (!so.kv.compresses())
      throw Error(ErrorKind::InvalidArgument, "a question-aware pack needs a compressing KV policy", opt::kv_policy);
    so.kv.window = uint32_t(query.size());  // the question is the observation window
    so.kv.validate();
  }
  std::vector<int32_t> all(doc.begin(), doc.end());
  all.insert(all.end(), query.begin(), query.end());
  if (so.n_ctx == 0) so.n_ctx = uint32_t(std::min<size_t>(all.size(), kMaxContext));
  Session session(model, so);
  const auto t0 = std::chrono::steady_clock::now();
  session.prefill(all);
  if (!query.empty()) session.drop_prompt_tail(uint32_t(query.size()));
  if (prefill_ms)
    *prefill_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return pack_of(session, std::vector<int32_t>(doc.begin(), doc.end()),
                 std::vector<int32_t>(query.begin(), query.end()));
}

void load_pack(Session& session, const Pack& p, const std::string& name) {
  check_pack_model(p, session.model(), name);
  if (p.kv_types != session.cache().types())
    bad_pack(name, "holds a " + kv_types_name(p.kv_types) + " KV cache, this session's is " +
                       kv_types_name(session.cache().types()) + " (--kv-type, --kv-type-k, --kv-type-v)");
  if (p.state.n_past > session.n_ctx() && !session.cache().fixed_rows())  // fixed rows: endless, positions go on
    bad_pack(name, "holds " + std::to_string(p.state.n_past) + " positions, more than the context of " +
                       std::to_string(session.n_ctx()) + " (raise -c)");
  try {
    session.restore_state(p.state, p.logits);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::InvalidArgument) throw;
    bad_pack(name, e.what());
  }
}

SessionOptions pack_session_options(const Pack& p, SessionOptions base) {
  base.set_kv_types(p.kv_types);
  base.kv = p.policy;
  return base;
}

std::vector<uint8_t> read_pack_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(ErrorKind::Io, "pack '" + path + "' is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::Io, "cannot open pack '" + path + "'");
  std::vector<uint8_t> bytes;
  char chunk[1 << 16];
  while (in.read(chunk, sizeof chunk) || in.gcount() > 0) bytes.insert(bytes.end(), chunk, chunk + in.gcount());
  if (in.bad()) throw Error(ErrorKind::Io, "cannot read pack '" + path + "'");
  return bytes;
}

void write_pack_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  // written beside, then renamed: a reader never sees half a pack
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(ErrorKind::Io, "cannot create pack '" + path + "'");
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    if (!out) throw Error(ErrorKind::Io, "cannot write pack '" + path + "'");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw Error(ErrorKind::Io, "cannot write pack '" + path + "': " + ec.message());
}

}  // namespace snapvk
